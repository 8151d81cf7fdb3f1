"""The query back end over the AWS stack: the request index, rollups and scores in DynamoDB, full
records in S3 (DynamoBackend, in backend.py).

Answers have the shapes of relaylog.query.local. Request lists read the index (a day's shards,
or the session, prompt or user GSI) and filter in Python with relaylog.query.filters' meaning;
stats, users and the session list start from the rollups. What DynamoDB cannot answer cheaply (body
search, minute buckets, stats over two dimensions at once) is refused with Unsupported saying what
can. Items are in aws/layout.py.

    table.py    reading the table: queries, batch gets, the index item of a request
    items.py    items as the local store's rows; the day partitions
    records.py  full records and their previews, from the S3 objects the index points at
    scores.py   scores and feedback
    scan.py     the index read in order: a day's shards merged, day after day, or a GSI
    index.py    request lists from it
    rollups.py  stats from the rollup items
    lists.py    sessions, users and prompts
    backend.py  the Backend made of these
"""
