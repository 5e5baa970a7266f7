"""ELF tools for the Lambda build, in pure Python (no binutils, so the build runs on macOS too).

    python infra/elf.py strip ARTIFACT_DIR   drop the symbol tables (.symtab, .strtab, .debug*) of
                                             every shared object: the dynamic loader never reads them
    python infra/elf.py check ARTIFACT_DIR   fail (one line per library) when a shipped binary links
                                             against a library the artifact lacks

Only 64-bit little-endian files are touched (Lambda's arm64 runtime loads nothing else). ``strip``
only removes sections that are not loaded (no SHF_ALLOC) and that lie after every loaded byte, and
leaves a file untouched when its layout is anything else: the program headers and every loaded
segment keep their bytes and offsets, so what the loader maps is byte for byte the same.
"""

from __future__ import annotations

import os
import struct
import sys
from collections.abc import Iterator

# The manylinux policy's system libraries (PEP 599/600): present in every Lambda runtime.
SYSTEM = {
    "libc.so.6", "libm.so.6", "libdl.so.2", "librt.so.1", "libpthread.so.0", "libstdc++.so.6",
    "libgcc_s.so.1", "ld-linux-aarch64.so.1", "ld-linux-x86-64.so.2", "libutil.so.1", "libresolv.so.2",
    "libcrypt.so.1", "libz.so.1", "libexpat.so.1", "libnsl.so.1",
}
_DT_NEEDED, _SHT_RELA, _SHT_DYNAMIC, _SHT_NOBITS, _SHT_REL, _SHF_ALLOC = 1, 4, 6, 8, 9, 2
_SECTION = "<IIQQQQIIQQ"  # name, type, flags, addr, offset, size, link, info, addralign, entsize
_PT_LOAD = 1


def _is_elf64le(data: bytes) -> bool:
    return data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1


def _sections(data: bytes) -> list[list[int]]:
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    return [list(struct.unpack_from(_SECTION, data, shoff + i * shentsize)) for i in range(shnum)]


def _name(data: bytes, table_offset: int, at: int) -> str:
    return data[table_offset + at:data.index(b"\0", table_offset + at)].decode()


def needed(data: bytes) -> list[str]:
    """DT_NEEDED names of an ELF file ([] for anything else)."""
    if not _is_elf64le(data):
        return []
    sections = _sections(data)
    names: list[str] = []
    for _, kind, _, _, offset, size, link, _, _, entsize in sections:
        if kind == _SHT_DYNAMIC:
            strings = sections[link][4]
            for at in range(offset, offset + size, entsize or 16):
                tag, value = struct.unpack_from("<qQ", data, at)
                if tag == _DT_NEEDED:
                    names.append(_name(data, strings, value))
    return names


def stripped(data: bytes) -> bytes | None:
    """``data`` without its symbol tables and debug sections, or None when there is nothing to do safely."""
    if not _is_elf64le(data):
        return None
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum, shentsize, _, shstrndx = struct.unpack_from("<HHHHH", data, 0x36)
    sections = _sections(data)
    names = [_name(data, sections[shstrndx][4], s[0]) for s in sections]
    drop = {i for i, s in enumerate(sections)
            if i not in (0, shstrndx) and not s[2] & _SHF_ALLOC
            and (names[i] in (".symtab", ".strtab") or names[i].startswith(".debug"))}
    while True:  # and what refers to a dropped section (relocations of debug sections)
        more = {i for i, s in enumerate(sections) if i not in drop and i not in (0, shstrndx)
                and not s[2] & _SHF_ALLOC
                and (s[6] in drop or (s[1] in (_SHT_REL, _SHT_RELA) and s[7] in drop))}
        if not more:
            break
        drop |= more
    if not drop:
        return None
    cut = min(sections[i][4] for i in drop)
    loaded_end = max([phoff + phentsize * phnum] + [
        offset + filesz for kind, offset, filesz in
        (struct.unpack_from("<I4xQ16xQ", data, phoff + i * phentsize) for i in range(phnum)) if kind == _PT_LOAD])
    kept = [i for i in range(len(sections)) if i not in drop]
    if loaded_end > cut or any(sections[i][1] != _SHT_NOBITS and sections[i][4] + sections[i][5] > cut
                               for i in kept if i not in (0, shstrndx)):
        return None
    if any(sections[i][6] in drop for i in kept):
        return None
    index = {old: new for new, old in enumerate(kept)}
    body = bytearray(data[:cut])
    names_section = sections[shstrndx]
    if names_section[4] + names_section[5] > cut:  # the section names lie after the cut: carried over
        start = names_section[4]
        names_section[4] = len(body)
        body += data[start:start + names_section[5]]
    body += b"\0" * (-len(body) % 8)
    table = len(body)
    for old in kept:
        section = list(sections[old])
        section[6] = index.get(section[6], 0) if section[6] else 0
        if section[1] in (_SHT_REL, _SHT_RELA) and section[7]:
            section[7] = index[section[7]]
        body += struct.pack(_SECTION, *section)
    struct.pack_into("<Q", body, 0x28, table)
    struct.pack_into("<HH", body, 0x3C, len(kept), index[shstrndx])
    assert shentsize == struct.calcsize(_SECTION)
    return bytes(body)


def _shared_objects(root: str) -> Iterator[str]:
    for directory, _, files in os.walk(root):
        for name in files:
            if ".so" in name:
                yield os.path.join(directory, name)


def strip(root: str) -> int:
    saved = 0
    for path in _shared_objects(root):
        with open(path, "rb") as fh:
            data = fh.read()
        smaller = stripped(data)
        if smaller is not None:
            with open(path, "wb") as fh:
                fh.write(smaller)
            saved += len(data) - len(smaller)
    print(f"==> stripped symbol tables: {saved / 1048576:.1f} MiB")
    return 0


def check(root: str) -> int:
    present = {name for _, _, files in os.walk(root) for name in files}
    missing = []
    for path in _shared_objects(root):
        with open(path, "rb") as fh:
            libraries = needed(fh.read())
        missing += [(os.path.relpath(path, root), lib) for lib in libraries if lib not in present | SYSTEM]
    for path, lib in sorted(missing):
        print(f"build.sh: {path} needs {lib}, which the artifact does not ship", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    command, root = sys.argv[1], sys.argv[2]
    sys.exit({"strip": strip, "check": check}[command](root))
