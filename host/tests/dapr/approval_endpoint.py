# The tutorial's FastAPI endpoint that approves a request by raising `approval_received`,
# unchanged but for its imports: the tutorial awaits `raise_workflow_event`, which the
# SDK's asyncio client (`dapr.ext.workflow.aio`) provides. It reaches Steadfast's Durable
# Task gRPC endpoint through the SDK's own settings (DAPR_GRPC_ENDPOINT, DAPR_API_TOKEN).
from dataclasses import dataclass

from fastapi import FastAPI
from dapr.ext.workflow.aio import DaprWorkflowClient

app = FastAPI()


@dataclass
class ApprovalDecision:
    approved: bool
    approver: str
    reason: str | None = None


# In your FastAPI endpoint
@app.post("/approve/{instance_id}")
async def approve_request(instance_id: str, decision: ApprovalDecision):
    client = DaprWorkflowClient()
    await client.raise_workflow_event(
        instance_id=instance_id,
        event_name="approval_received",
        data={
            "approved": decision.approved,
            "approver": decision.approver,
            "reason": decision.reason
        }
    )
    return {"status": "event_raised", "instance_id": instance_id}
