"""`relaylog demo`: the stand-in provider (relaylog.standin) and `relaylog serve` started together,
a realistic mix of calls sent through the proxy (calls.py), and the dashboard's URL once they are
all recorded; Ctrl-C stops both. No provider key, nothing leaves the machine.

    calls.py   the calls, in each provider's wire format
    runner.py  start, send, wait until recorded, stop
"""
