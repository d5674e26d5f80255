#!/usr/bin/env python3
"""moto's server, with DynamoDB requests serialised.

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


def main():
    host, port = sys.argv[1], int(sys.argv[2])
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
