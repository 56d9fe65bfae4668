# The tutorial's approval activities as plain Python functions, registered with the Dapr
# SDK's WorkflowRuntime, in a worker process of the user's own: Steadfast sends them the
# activity work of tenant workflows (Wasm components) over the Durable Task protocol.
# Each call is appended to the file argv[1] (with this process's pid). With
# SLOW_ACTIVITY=<name>, that activity blocks until the process is killed.
import json
import os
import sys
import time

from dapr.ext.workflow import WorkflowRuntime

MARKS = sys.argv[1]
SLOW = os.environ.get("SLOW_ACTIVITY", "")


def mark(event, payload):
    with open(MARKS, "a") as f:
        f.write(json.dumps({"pid": os.getpid(), "event": event, "payload": payload}) + "\n")


def send_approval_request(ctx, request):
    """Send approval request to manager."""
    mark("send_approval_request started", request)
    if SLOW == "send_approval_request":
        time.sleep(3600)
    print(f"Sending approval request for {request['request_id']} (${request['amount']}) to manager")
    mark("send_approval_request done", request)


def send_timeout_notification(ctx, request):
    """Notify requester that approval timed out."""
    mark("send_timeout_notification", request)


def send_rejection_notification(ctx, payload):
    mark("send_rejection_notification", payload)


def execute_approved_action(ctx, request):
    """Execute the action after approval."""
    print(f"Executing approved action for {request['request_id']}")
    mark("execute_approved_action", request)


def send_approval_confirmation(ctx, payload):
    mark("send_approval_confirmation", payload)
    return {"confirmed": payload["request"]["request_id"], "by_pid": os.getpid()}


runtime = WorkflowRuntime()
for activity in [
    send_approval_request,
    send_timeout_notification,
    send_rejection_notification,
    execute_approved_action,
    send_approval_confirmation,
]:
    runtime.register_activity(activity)
runtime.start()
mark("worker started", None)
while True:
    time.sleep(1)
