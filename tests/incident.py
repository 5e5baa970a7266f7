"""An incident to report on: a quiet table, then a bad deploy rewrites and deletes items in a burst.

Shared by the report's data tests and its browser test, so both check the page against one story.
"""

from __future__ import annotations

from changelog.store import Store
from tests.workloads import BASE, Workload

US = 1_000_000
START = BASE  # the items exist from here on
DEPLOY = BASE - BASE % 60 + 1800  # the burst: within one minute
FROM = BASE + 600
TO = BASE + 2400
LATER = BASE + 3000  # a write after the window: coverage reaches past --to
# A value a page must show as text, never run or parse as markup.
HOSTILE = '</script><img src=x onerror="document.title=\'pwned\'"><b>bold</b>'


def capture_incident(store: Store) -> Workload:
    """20 items; in the window 12 get a new status (one also a hostile note), 3 are deleted, 2 created."""
    work = Workload()
    for n in range(20):
        work.put({"pk": {"S": f"order-{n:02}"}, "status": {"S": "paid"}, "total": {"N": "10"}}, START + n)
    work.put({"pk": {"S": "order-00"}, "status": {"S": "paid"}, "total": {"N": "10.0"}}, FROM - 60)
    for n in range(12):
        item = {"pk": {"S": f"order-{n:02}"}, "status": {"S": "cancelled"}, "total": {"N": "10"}}
        if n == 0:
            item["note"] = {"S": HOSTILE}
        if n == 1:
            del item["total"]
        work.put(item, DEPLOY + n)
    for n in range(17, 20):
        work.delete({"pk": {"S": f"order-{n:02}"}}, DEPLOY + 20 + n)
    for n in range(2):
        work.put({"pk": {"S": f"ghost-{n}"}, "status": {"S": "cancelled"}}, DEPLOY + 50 + n)
    work.put({"pk": {"S": "order-05"}, "status": {"S": "paid"}, "total": {"N": "10"}}, LATER)
    work.capture(store)
    return work
