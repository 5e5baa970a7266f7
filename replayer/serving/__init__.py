"""Serving a past moment: the tables as they were at T behind DynamoDB's own read API (``ddb-rewind serve``).

``index`` writes each table's state at T as sorted, memory-mapped Arrow files; ``moment`` answers DynamoDB's
read operations over it with moto's DynamoDB semantics; ``protocol`` speaks the JSON 1.0 wire protocol
and refuses every write; ``server`` is the loopback HTTP server.
"""
