// The official Dapr JavaScript SDK (@dapr/dapr, HTTP protocol) driving Steadfast's
// Dapr-compatible workflow API, exactly as it would drive a daprd sidecar. Prints one JSON
// line with what each call returned; the Rust test checks it.
const { DaprClient, CommunicationProtocolEnum } = require("@dapr/dapr");

async function until(get, want) {
  for (let i = 0; i < 300; i++) {
    const state = await get();
    if (state.runtimeStatus === want) return state;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`never became ${want}`);
}

async function main() {
  const client = new DaprClient({
    daprHost: process.env.DAPR_HOST,
    daprPort: process.env.DAPR_HTTP_PORT,
    communicationProtocol: CommunicationProtocolEnum.HTTP,
    daprApiToken: process.env.DAPR_API_TOKEN,
  });
  const seen = {};
  const request = { request_id: "js-1", requester: "bob@company.com", amount: 5000, description: "Team offsite" };

  // start, get, pause, resume, raise event: the tutorial's approval.
  const id = await client.workflow.start("approval_workflow", request, "js-approval");
  seen.started = id;
  seen.running = (await until(() => client.workflow.get(id), "RUNNING")).runtimeStatus;
  await client.workflow.pause(id);
  seen.paused = (await client.workflow.get(id)).runtimeStatus;
  await client.workflow.resume(id);
  seen.resumed = (await until(() => client.workflow.get(id), "RUNNING")).runtimeStatus;
  await client.workflow.raise(id, "approval_received", { approved: true, approver: "manager@company.com", reason: "ok" });
  const done = await until(() => client.workflow.get(id), "COMPLETED");
  seen.completed = { status: done.runtimeStatus, workflow: done.workflowName, output: done.properties["dapr.workflow.output"] };

  // terminate and purge another.
  const other = await client.workflow.start("approval_workflow", { ...request, request_id: "js-2" }, "js-doomed");
  await until(() => client.workflow.get(other), "RUNNING");
  await client.workflow.terminate(other);
  seen.terminated = (await until(() => client.workflow.get(other), "TERMINATED")).runtimeStatus;
  await client.workflow.purge(other);
  try {
    await client.workflow.get(other);
    seen.after_purge = "still there";
  } catch (e) {
    seen.after_purge = JSON.parse(e.message).status;
  }
  console.log(JSON.stringify(seen));
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e && e.stack ? e.stack : e);
    process.exit(1);
  },
);
