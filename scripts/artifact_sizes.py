#!/usr/bin/env python3
"""Each function's release `bootstrap` and its size zipped as SAM zips it (deflate), as a Markdown table.

Run after `make build-arm64` (or `make sizes`, which builds first)."""
import io
import os
import sys
import zipfile

FUNCTIONS = ["connect", "callback", "api", "sync-scheduler", "sync-worker", "event-publisher", "webhook-sender"]


def main() -> int:
    # Where `cargo lambda build` put them: under CARGO_TARGET_DIR when it is set (as CI sets it), else ./target.
    default = os.path.join(os.environ.get("CARGO_TARGET_DIR") or "target", "lambda")
    root = sys.argv[1] if len(sys.argv) > 1 else default
    print("| function | bootstrap | zip |\n|---|---|---|")
    for name in FUNCTIONS:
        path = os.path.join(root, name, "bootstrap")
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.write(path, "bootstrap")
        print(f"| {name} | {os.path.getsize(path) / 1e6:.2f} MB | {len(buffer.getvalue()) / 1e6:.2f} MB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
