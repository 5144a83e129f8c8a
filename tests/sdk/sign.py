"""Signs a webhook body with a vendor's own Python SDK and prints the headers as JSON.

usage: python3 sign.py <standard_webhooks|slack> <secret> <body-file> [message-id]
"""
import json
import sys
import time
from datetime import datetime, timezone

vendor, secret, path = sys.argv[1:4]
body = open(path, "rb").read()
if vendor == "standard_webhooks":
    from standardwebhooks.webhooks import Webhook

    msg_id = sys.argv[4]
    now = datetime.now(tz=timezone.utc)
    signature = Webhook(secret).sign(msg_id, now, body.decode())
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(int(now.timestamp())), "webhook-signature": signature}
elif vendor == "slack":
    from slack_sdk.signature import SignatureVerifier

    ts = str(int(time.time()))
    signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body.decode())
    headers = {"x-slack-request-timestamp": ts, "x-slack-signature": signature}
else:
    sys.exit(f"unknown vendor {vendor}")
print(json.dumps(headers))
