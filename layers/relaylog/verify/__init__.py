"""`relaylog verify`: prove a deployment end to end, stage by stage, without a provider key.

One call to relaylog's own echo route (relay/echo.py) is followed through every stage of the
pipeline until it shows up where users look for it:

    stages.py   the stages, their timeouts and results, the runner that stops at the first failure
    web.py      what is asked over HTTP: the proxy's echo, the query API, the dashboard
    aws.py      what is read on AWS: the stack's outputs, the S3 delivery, the aggregator, Athena
    command.py  which stages run for `--url` and for `--stack`, and the report
"""
