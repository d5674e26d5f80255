#!/usr/bin/env python3
"""moto's server, with DynamoDB requests serialised (and two of its hot spots made cheap).

moto's DynamoDB backend takes no lock, so under its threaded server two concurrent conditional writes can both
succeed, where real DynamoDB makes each write atomic. The connector's correctness rests on that atomicity (refresh
leases, run leases, the points budget, single-use states), so the local stack serialises DynamoDB calls; every
other service stays concurrent.

    moto_server.py HOST PORT
"""

import os
import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

DYNAMODB = threading.Lock()


def fast_sqs_clock():
    """moto's SQS asks the time of every message on every send and receive, through naive datetimes: with a few
    thousand messages queued (the load test's scheduler queues one per tenant and type) that alone took each request
    close to a second. The same clock, read directly."""
    import time

    import moto.sqs.models as sqs

    slow_ms, slow_s = sqs.unix_time_millis, sqs.unix_time
    sqs.unix_time_millis = lambda dt=None: time.time() * 1000.0 if dt is None else slow_ms(dt)
    sqs.unix_time = lambda dt=None: time.time() if dt is None else slow_s(dt)


def fast_partition_queries():
    """moto answers a query on a table's own keys by sorting every item of the table and filtering them: with the
    load test's hundred thousand mirrored objects each query took seconds. A query reads one partition, as
    DynamoDB does; index queries are left alone."""
    import moto.dynamodb.models.table as table

    partition = threading.local()
    slow_query, slow_all_items = table.Table.query, table.Table.all_items

    def query(self, hash_key, *args, **kwargs):
        index_name = kwargs.get("index_name", args[6] if len(args) > 6 else None)
        partition.key = None if index_name else hash_key
        try:
            return slow_query(self, hash_key, *args, **kwargs)
        finally:
            partition.key = None

    def all_items(self):
        key = getattr(partition, "key", None)
        if key is None or not self.range_key_attr:
            return slow_all_items(self)
        items = self.items.get(key, {})
        return sorted(items.values(), key=lambda item: item.range_key)

    table.Table.query, table.Table.all_items = query, all_items


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    fast_sqs_clock()
    fast_partition_queries()
    os.environ.setdefault("MOTO_PORT", str(port))
    app = DomainDispatcherApplication(create_backend_app)

    def serialised(environ, start_response):
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            with DYNAMODB:
                # Materialise the body inside the lock: the request's whole effect happens under it.
                return list(app(environ, start_response))
        return app(environ, start_response)

    run_simple(host, port, serialised, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
