# The official Dapr Python SDK's DaprWorkflowClient (dapr-ext-workflow) against Steadfast's
# Durable Task gRPC endpoint, exactly as against daprd: it schedules the tutorial's
# approval workflow (a Wasm component in Steadfast), waits for it to start, pauses and
# resumes it, has the tutorial's FastAPI endpoint (argv[1]) approve it, waits for it to
# complete and reads its output; then terminates and purges another. Prints one JSON line
# with what each call returned; the Rust test checks it.
import json
import os
import sys
import time
import urllib.request

import grpc
from dapr.conf import settings
from dapr.ext.workflow import DaprWorkflowClient


def approval_workflow(ctx, request):
    """Only its name is used here: Steadfast runs the workflow as a Wasm component."""
    raise NotImplementedError


def client_with(token):
    settings.DAPR_API_TOKEN = token
    return DaprWorkflowClient()


def code_of(call):
    try:
        call()
        return "OK"
    except grpc.RpcError as e:
        return e.code().name
    except Exception as e:  # the SDK wraps some errors
        cause = e.__cause__ or e.__context__
        if isinstance(cause, grpc.RpcError):
            return cause.code().name
        return f"{type(e).__name__}: {e}"


endpoint = sys.argv[1]
seen = {}
client = client_with(os.environ["DAPR_API_TOKEN"])
request = {"request_id": "req-py", "requester": "bob@company.com", "amount": 5000, "description": "Team offsite"}

iid = client.schedule_new_workflow(workflow=approval_workflow, input=request, instance_id="py-approval")
seen["scheduled"] = iid
seen["started"] = client.wait_for_workflow_start(iid, timeout_in_seconds=30).runtime_status.name
# The workflow sets its custom status in its first step, which may not have run yet.
for _ in range(300):
    state = client.get_workflow_state(iid)
    if state.serialized_custom_status:
        break
    time.sleep(0.1)
seen["name"] = state.name
seen["custom_status"] = json.loads(state.serialized_custom_status)
client.pause_workflow(iid)
seen["paused"] = client.get_workflow_state(iid).runtime_status.name
client.resume_workflow(iid)
seen["resumed"] = client.get_workflow_state(iid).runtime_status.name

decision = json.dumps({"approved": True, "approver": "manager@company.com", "reason": "Budget available"}).encode()
answer = urllib.request.urlopen(
    urllib.request.Request(f"{endpoint}/approve/{iid}", data=decision, headers={"Content-Type": "application/json"}),
    timeout=30,
)
seen["endpoint"] = json.loads(answer.read())

done = client.wait_for_workflow_completion(iid, timeout_in_seconds=60)
seen["completed"] = done.runtime_status.name
seen["output"] = json.loads(done.serialized_output)

other = client.schedule_new_workflow(workflow="approval_workflow", input={**request, "request_id": "req-py-2"}, instance_id="py-doomed")
client.wait_for_workflow_start(other, timeout_in_seconds=30)
client.terminate_workflow(other)
seen["terminated"] = client.wait_for_workflow_completion(other, timeout_in_seconds=30).runtime_status.name
client.purge_workflow(other)
seen["after_purge"] = client.get_workflow_state(other) is None

# Who may do what, by the tokens the test gives.
seen["no_token"] = code_of(lambda: client_with("not-a-token").get_workflow_state(iid))
viewer = client_with(os.environ["VIEWER_TOKEN"])
seen["viewer_reads"] = viewer.get_workflow_state(iid).runtime_status.name
seen["viewer_raises"] = code_of(lambda: viewer.raise_workflow_event(iid, "approval_received", data={"approved": True}))
stranger = client_with(os.environ["OTHER_TENANT_TOKEN"])
seen["other_tenant_reads"] = stranger.get_workflow_state(iid) is None
seen["other_tenant_raises"] = code_of(lambda: stranger.raise_workflow_event(iid, "approval_received", data={"approved": True}))
print(json.dumps(seen))
