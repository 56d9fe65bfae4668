//! The Durable Task sidecar protocol over gRPC (`TaskHubSidecarService`), what the Dapr
//! workflow SDKs' clients speak to daprd: start, get, wait, raise, terminate, suspend,
//! resume, query and purge, on the same engine, tokens, tenants and scopes as the HTTP
//! API. The caller authenticates with the `dapr-api-token` metadata entry (or
//! `authorization: Bearer`); 401, 403 and another tenant's 404 answer as
//! `UNAUTHENTICATED`, `PERMISSION_DENIED` and `NOT_FOUND`.
//!
//! The protocol's messages are in `host/proto/durabletask_sidecar.proto`.

use std::time::Duration;

use axum::http::StatusCode;
use tonic::{Request, Response, Status};

use super::{ApiError, AppState, Principal};
use crate::engine::{
    EngineError, InstanceFilter, InstanceRecord, ReusePolicy, Scope, StartOptions,
};
use crate::model::{RuntimeStatus, Timestamp};

/// The messages and the service, generated from the protocol's definitions.
#[allow(clippy::all, missing_docs, unreachable_pub)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/_.rs"));
}

use proto::task_hub_sidecar_service_server::{TaskHubSidecarService, TaskHubSidecarServiceServer};
use proto::{OrchestrationState, OrchestrationStatus};

/// The service, sharing the HTTP API's state (token cache, rates, engine).
#[derive(Clone)]
pub(crate) struct Sidecar {
    state: AppState,
}

impl Sidecar {
    pub(crate) fn server(state: AppState) -> TaskHubSidecarServiceServer<Sidecar> {
        let limit = state_limit(&state);
        TaskHubSidecarServiceServer::new(Sidecar { state }).max_decoding_message_size(limit)
    }

    /// Who calls, from the request's metadata, as the HTTP API would decide it.
    async fn caller<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        let metadata = request.metadata();
        let text = |name: &str| metadata.get(name).and_then(|v| v.to_str().ok());
        let token = text("dapr-api-token").or_else(|| {
            text("authorization").and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
        });
        super::auth::authenticate(&self.state, token)
            .await
            .map_err(status)
    }
    /// The caller, if its token has `scope`, and its tenant's instance `local`. The
    /// caller is kept for the call: it holds the tenant's request slot.
    async fn instance_for<T>(
        &self,
        request: &Request<T>,
        scope: Scope,
        local: &str,
    ) -> Result<(Principal, crate::model::InstanceId), Status> {
        let principal = self.caller(request).await?;
        principal.require(scope).map_err(status)?;
        let id = principal.instance(local).map_err(status)?;
        Ok((principal, id))
    }
}

/// The largest message accepted: the payload limit, with room for the envelope.
fn state_limit(state: &AppState) -> usize {
    state.config.max_payload_bytes + 64 * 1024
}

/// An API error as a gRPC status, keeping its message.
fn status(e: ApiError) -> Status {
    let message = format!("{}: {}", e.code, e.message);
    match e.status {
        StatusCode::UNAUTHORIZED => Status::unauthenticated(message),
        StatusCode::FORBIDDEN => Status::permission_denied(message),
        StatusCode::NOT_FOUND => Status::not_found(message),
        StatusCode::CONFLICT if e.code == "instance_exists" => Status::already_exists(message),
        StatusCode::CONFLICT => Status::failed_precondition(message),
        StatusCode::TOO_MANY_REQUESTS => Status::resource_exhausted(message),
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::BAD_REQUEST => {
            Status::invalid_argument(message)
        }
        StatusCode::SERVICE_UNAVAILABLE => Status::unavailable(message),
        _ => Status::internal(message),
    }
}

fn engine_status(e: EngineError) -> Status {
    status(e.into())
}

fn timestamp(at: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: i64::try_from(at.0 / 1000).unwrap_or(i64::MAX),
        nanos: i32::try_from((at.0 % 1000) * 1_000_000).unwrap_or(0),
    }
}

fn millis(at: &prost_types::Timestamp) -> u64 {
    let ms = at
        .seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(at.nanos / 1_000_000));
    u64::try_from(ms).unwrap_or(0)
}

/// Ours in the protocol's terms.
fn orchestration_status(status: RuntimeStatus) -> OrchestrationStatus {
    match status {
        RuntimeStatus::Pending => OrchestrationStatus::Pending,
        RuntimeStatus::Running => OrchestrationStatus::Running,
        RuntimeStatus::Completed => OrchestrationStatus::Completed,
        RuntimeStatus::ContinuedAsNew => OrchestrationStatus::ContinuedAsNew,
        RuntimeStatus::Failed => OrchestrationStatus::Failed,
        RuntimeStatus::Stalled => OrchestrationStatus::Stalled,
        RuntimeStatus::Terminated => OrchestrationStatus::Terminated,
        RuntimeStatus::Suspended => OrchestrationStatus::Suspended,
    }
}

fn runtime_status(status: OrchestrationStatus) -> Option<RuntimeStatus> {
    Some(match status {
        OrchestrationStatus::Pending => RuntimeStatus::Pending,
        OrchestrationStatus::Running => RuntimeStatus::Running,
        OrchestrationStatus::Completed => RuntimeStatus::Completed,
        OrchestrationStatus::ContinuedAsNew => RuntimeStatus::ContinuedAsNew,
        OrchestrationStatus::Failed => RuntimeStatus::Failed,
        OrchestrationStatus::Terminated => RuntimeStatus::Terminated,
        OrchestrationStatus::Suspended => RuntimeStatus::Suspended,
        OrchestrationStatus::Stalled => RuntimeStatus::Stalled,
        OrchestrationStatus::Canceled => return None,
    })
}

/// The statuses a query or purge names; an error if it names one Steadfast has no such
/// instances of (CANCELED) or an unknown one, rather than matching everything.
fn statuses(named: &[i32]) -> Result<Vec<RuntimeStatus>, Status> {
    named
        .iter()
        .map(|n| {
            OrchestrationStatus::try_from(*n)
                .ok()
                .and_then(runtime_status)
                .ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "runtime status {n} is not one Steadfast instances can have"
                    ))
                })
        })
        .collect()
}

fn state_of(record: &InstanceRecord, payloads: bool) -> OrchestrationState {
    let ended = record.status.is_terminal();
    let failure = record.error.as_ref().map(|e| proto::TaskFailureDetails {
        error_type: e.kind.clone(),
        error_message: e.message.clone(),
        ..Default::default()
    });
    OrchestrationState {
        instance_id: record.id.local().to_owned(),
        name: record.workflow.clone(),
        orchestration_status: orchestration_status(record.status) as i32,
        scheduled_start_timestamp: record.start_at.map(timestamp),
        created_timestamp: Some(timestamp(record.created_at)),
        last_updated_timestamp: Some(timestamp(record.updated_at)),
        completed_timestamp: ended.then(|| timestamp(record.updated_at)),
        input: payloads.then(|| record.input.clone()),
        output: if payloads {
            record.output.clone()
        } else {
            None
        },
        custom_status: record.custom_status.clone(),
        failure_details: failure,
        parent_instance_id: record.parent.as_ref().map(|p| p.local().to_owned()),
        ..Default::default()
    }
}

/// A wait of at most five minutes (as `/wait` over HTTP), or the caller's deadline if it
/// comes first: the call is dropped then.
async fn capped(
    wait: impl std::future::Future<Output = Result<InstanceRecord, EngineError>>,
) -> Result<InstanceRecord, Status> {
    let limit = Duration::from_millis(super::openapi::MAX_WAIT_MS);
    match tokio::time::timeout(limit, wait).await {
        Ok(record) => record.map_err(engine_status),
        Err(_) => Err(Status::deadline_exceeded(
            "the instance did not get there within 5 minutes; wait again",
        )),
    }
}

/// A JSON payload from the protocol's string field (`null` when absent or empty).
fn payload(text: Option<String>) -> Result<String, Status> {
    match text {
        None => Ok("null".to_owned()),
        Some(text) if text.trim().is_empty() => Ok("null".to_owned()),
        Some(text) => serde_json::from_str::<serde::de::IgnoredAny>(&text)
            .map(|_| text)
            .map_err(|e| Status::invalid_argument(format!("the payload is not JSON: {e}"))),
    }
}

/// A worker's stream of tasks; when the worker goes away (the stream is dropped), what it
/// had not answered goes to another worker.
struct Disconnect {
    engine: crate::engine::Engine,
    tenant: String,
    worker: u64,
}

impl Drop for Disconnect {
    fn drop(&mut self) {
        self.engine.disconnect_worker(&self.tenant, self.worker);
    }
}

type WorkItems =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<proto::WorkItem, Status>> + Send>>;

#[tonic::async_trait]
impl TaskHubSidecarService for Sidecar {
    type GetWorkItemsStream = WorkItems;

    /// A worker connects: its tenant's activity calls that nothing else answers stream
    /// to it. Workers need the `read` and `signal` scopes: they read the tenant's activity
    /// inputs, and their results enter workflows.
    async fn get_work_items(
        &self,
        request: Request<proto::GetWorkItemsRequest>,
    ) -> Result<Response<WorkItems>, Status> {
        use tokio_stream::StreamExt as _;
        let principal = self.caller(&request).await?;
        // A worker reads the tenant's activity inputs and writes their results.
        principal.require(Scope::Read).map_err(status)?;
        principal.require(Scope::Signal).map_err(status)?;
        let engine = self.state.engine.clone();
        let stream = engine
            .connect_worker(&principal.tenant)
            .await
            .map_err(engine_status)?;
        let pending = engine.clone();
        let guard = Disconnect {
            engine,
            tenant: stream.tenant.clone(),
            worker: stream.id,
        };
        let items = tokio_stream::wrappers::ReceiverStream::new(stream.tasks)
            // A task whose dispatcher stopped waiting (timed out) is not sent at all.
            .filter(move |task| pending.delivery_pending(&task.token))
            .map(move |task| {
                let _worker = &guard;
                Ok(proto::WorkItem {
                    completion_token: task.token.clone(),
                    request: Some(proto::work_item::Request::ActivityRequest(
                        proto::ActivityRequest {
                            name: task.name,
                            input: Some(task.input),
                            workflow_instance: Some(proto::WorkflowInstance {
                                instance_id: task.instance,
                                execution_id: None,
                            }),
                            task_id: task.task_id,
                            task_execution_id: task.execution_id,
                            ..Default::default()
                        },
                    )),
                })
            });
        Ok(Response::new(Box::pin(items)))
    }

    async fn complete_activity_task(
        &self,
        request: Request<proto::ActivityResponse>,
    ) -> Result<Response<proto::CompleteTaskResponse>, Status> {
        let principal = self.caller(&request).await?;
        principal.require(Scope::Read).map_err(status)?;
        principal.require(Scope::Signal).map_err(status)?;
        let answer = request.into_inner();
        let result = match answer.failure_details {
            Some(failure) => Err(crate::model::ErrorInfo::new(
                if failure.error_type.is_empty() {
                    "activity_failed".to_owned()
                } else {
                    failure.error_type
                },
                failure.error_message,
            )),
            None => {
                let output = payload(answer.result)?;
                if output.len() > self.state.config.max_payload_bytes {
                    Err(crate::model::ErrorInfo::new(
                        "payload_too_large",
                        format!(
                            "the activity result is {} bytes; the limit is {}",
                            output.len(),
                            self.state.config.max_payload_bytes
                        ),
                    ))
                } else {
                    Ok(output)
                }
            }
        };
        // An answer nobody waits for (a second delivery's, a timed-out one) is dropped:
        // the first answer was journaled, once.
        self.state
            .engine
            .worker_answered(&principal.tenant, &answer.completion_token, result);
        Ok(Response::new(proto::CompleteTaskResponse {}))
    }

    async fn abandon_task_activity_work_item(
        &self,
        request: Request<proto::AbandonActivityTaskRequest>,
    ) -> Result<Response<proto::AbandonActivityTaskResponse>, Status> {
        let principal = self.caller(&request).await?;
        principal.require(Scope::Read).map_err(status)?;
        principal.require(Scope::Signal).map_err(status)?;
        let abandon = request.into_inner();
        self.state
            .engine
            .worker_abandoned(&principal.tenant, &abandon.completion_token);
        Ok(Response::new(proto::AbandonActivityTaskResponse {}))
    }

    async fn hello(&self, request: Request<()>) -> Result<Response<()>, Status> {
        self.caller(&request).await?;
        Ok(Response::new(()))
    }

    async fn start_instance(
        &self,
        request: Request<proto::CreateInstanceRequest>,
    ) -> Result<Response<proto::CreateInstanceResponse>, Status> {
        let principal = self.caller(&request).await?;
        principal.require(Scope::Start).map_err(status)?;
        let start = request.into_inner();
        let reuse = match start
            .orchestration_id_reuse_policy
            .as_ref()
            .map(|p| p.action())
        {
            Some(proto::CreateOrchestrationAction::Ignore) => ReusePolicy::Ignore,
            Some(proto::CreateOrchestrationAction::Terminate) => {
                principal.require(Scope::Signal).map_err(status)?;
                ReusePolicy::TerminateExisting
            }
            _ => ReusePolicy::Error,
        };
        let engine = &self.state.engine;
        let start_at = start
            .scheduled_start_timestamp
            .as_ref()
            .map(|at| Timestamp(millis(at)))
            .filter(|at| *at > engine.now());
        if let Some(at) = start_at
            && at.0 - engine.now().0 > super::openapi::MAX_START_DELAY_MS
        {
            return Err(Status::invalid_argument(
                "the scheduled start is more than 100 years away",
            ));
        }
        let options = StartOptions {
            instance_id: Some(start.instance_id).filter(|id| !id.is_empty()),
            tenant: Some(principal.tenant.clone()),
            reuse,
            start_at,
            traceparent: start
                .parent_trace_context
                .map(|t| t.trace_parent)
                .filter(|t| crate::traces::parse_traceparent(t).is_some()),
        };
        let input = payload(start.input)?;
        let id = engine
            .start(&start.name, &input, options)
            .await
            .map_err(engine_status)?;
        Ok(Response::new(proto::CreateInstanceResponse {
            instance_id: id.local().to_owned(),
        }))
    }

    async fn get_instance(
        &self,
        request: Request<proto::GetInstanceRequest>,
    ) -> Result<Response<proto::GetInstanceResponse>, Status> {
        let (_caller, id) = self
            .instance_for(&request, Scope::Read, &request.get_ref().instance_id)
            .await?;
        let get = request.into_inner();
        let read = super::blocking(&self.state, move |engine| engine.status(&id)).await;
        Ok(Response::new(match read {
            Ok(record) => proto::GetInstanceResponse {
                exists: true,
                orchestration_state: Some(state_of(&record, get.get_inputs_and_outputs)),
            },
            Err(e) if e.status == StatusCode::NOT_FOUND => proto::GetInstanceResponse {
                exists: false,
                orchestration_state: None,
            },
            Err(e) => return Err(status(e)),
        }))
    }

    async fn wait_for_instance_start(
        &self,
        request: Request<proto::GetInstanceRequest>,
    ) -> Result<Response<proto::GetInstanceResponse>, Status> {
        let (_caller, id) = self
            .instance_for(&request, Scope::Read, &request.get_ref().instance_id)
            .await?;
        let get = request.into_inner();
        let record = capped(self.state.engine.wait_for_start(&id)).await?;
        Ok(Response::new(proto::GetInstanceResponse {
            exists: true,
            orchestration_state: Some(state_of(&record, get.get_inputs_and_outputs)),
        }))
    }

    async fn wait_for_instance_completion(
        &self,
        request: Request<proto::GetInstanceRequest>,
    ) -> Result<Response<proto::GetInstanceResponse>, Status> {
        let (_caller, id) = self
            .instance_for(&request, Scope::Read, &request.get_ref().instance_id)
            .await?;
        let get = request.into_inner();
        let record = capped(self.state.engine.wait_for_completion(&id)).await?;
        Ok(Response::new(proto::GetInstanceResponse {
            exists: true,
            orchestration_state: Some(state_of(&record, get.get_inputs_and_outputs)),
        }))
    }

    async fn raise_event(
        &self,
        request: Request<proto::RaiseEventRequest>,
    ) -> Result<Response<proto::RaiseEventResponse>, Status> {
        let (_caller, id) = self
            .instance_for(&request, Scope::Signal, &request.get_ref().instance_id)
            .await?;
        let raise = request.into_inner();
        let data = payload(raise.input)?;
        if data.len() > self.state.config.max_payload_bytes {
            return Err(Status::invalid_argument(format!(
                "the event payload is {} bytes; the limit is {}",
                data.len(),
                self.state.config.max_payload_bytes
            )));
        }
        self.state
            .engine
            .raise_event(&id, &raise.name, &data)
            .await
            .map_err(engine_status)?;
        Ok(Response::new(proto::RaiseEventResponse {}))
    }

    async fn terminate_instance(
        &self,
        request: Request<proto::TerminateRequest>,
    ) -> Result<Response<proto::TerminateResponse>, Status> {
        let (_caller, id) = self
            .instance_for(&request, Scope::Signal, &request.get_ref().instance_id)
            .await?;
        let terminate = request.into_inner();
        // Children are always terminated with their parent (`recursive` or not).
        let reason = terminate
            .output
            .unwrap_or_else(|| "terminated through the Durable Task API".to_owned());
        self.state
            .engine
            .terminate(&id, &reason)
            .await
            .map_err(engine_status)?;
        Ok(Response::new(proto::TerminateResponse {}))
    }

    async fn suspend_instance(
        &self,
        request: Request<proto::SuspendRequest>,
    ) -> Result<Response<proto::SuspendResponse>, Status> {
        let (_caller, id) = self
            .instance_for(&request, Scope::Signal, &request.get_ref().instance_id)
            .await?;
        let suspend = request.into_inner();
        let reason = suspend
            .reason
            .unwrap_or_else(|| "suspended through the Durable Task API".to_owned());
        self.state
            .engine
            .suspend(&id, &reason)
            .await
            .map_err(engine_status)?;
        Ok(Response::new(proto::SuspendResponse {}))
    }

    async fn resume_instance(
        &self,
        request: Request<proto::ResumeRequest>,
    ) -> Result<Response<proto::ResumeResponse>, Status> {
        let (_caller, id) = self
            .instance_for(&request, Scope::Signal, &request.get_ref().instance_id)
            .await?;
        let resume = request.into_inner();
        let reason = resume
            .reason
            .unwrap_or_else(|| "resumed through the Durable Task API".to_owned());
        self.state
            .engine
            .resume(&id, &reason)
            .await
            .map_err(engine_status)?;
        Ok(Response::new(proto::ResumeResponse {}))
    }

    async fn query_instances(
        &self,
        request: Request<proto::QueryInstancesRequest>,
    ) -> Result<Response<proto::QueryInstancesResponse>, Status> {
        let principal = self.caller(&request).await?;
        principal.require(Scope::Read).map_err(status)?;
        let query = request.into_inner().query.unwrap_or_default();
        let wanted = statuses(&query.runtime_status)?;
        let prefix = query.instance_id_prefix.clone().unwrap_or_default();
        if prefix.chars().count() > super::openapi::MAX_SEARCH_CHARS {
            return Err(Status::invalid_argument(format!(
                "an instance id prefix is at most {} characters",
                super::openapi::MAX_SEARCH_CHARS
            )));
        }
        let limit = match query.max_instance_count {
            n if n <= 0 => 100,
            n => n.min(1000) as u32,
        };
        let filter = InstanceFilter {
            workflow: None,
            // One status is filtered in the journal; several, below.
            status: (wanted.len() == 1).then(|| wanted[0]),
            created_after: query
                .created_time_from
                .as_ref()
                .map(|t| Timestamp(millis(t))),
            created_before: query.created_time_to.as_ref().map(|t| Timestamp(millis(t))),
            search: Some(prefix.clone()).filter(|p| !p.is_empty()),
            descending: false,
            after: query.continuation_token.clone().filter(|t| !t.is_empty()),
            limit,
        };
        let tenant = principal.tenant.clone();
        let records = super::blocking(&self.state, move |engine| {
            engine.list_instances(&tenant, &filter)
        })
        .await
        .map_err(status)?;
        let next = (records.len() as u32 == limit)
            .then(|| records.last().map(|r| r.id.local().to_owned()))
            .flatten();
        // Bounded in bytes as the HTTP list is: a page stops early and says where to go on.
        let mut states: Vec<OrchestrationState> = Vec::new();
        let mut bytes = 0;
        let mut next = next;
        for record in &records {
            if bytes >= super::MAX_PAGE_BYTES {
                next = Some(
                    states
                        .last()
                        .map_or_else(String::new, |s| s.instance_id.clone()),
                )
                .filter(|n| !n.is_empty());
                break;
            }
            if !(wanted.is_empty() || wanted.contains(&record.status))
                || !record.id.local().starts_with(&prefix)
            {
                continue;
            }
            if query.fetch_inputs_and_outputs {
                bytes += record.input.len() + record.output.as_ref().map_or(0, String::len);
            }
            bytes += record.custom_status.as_ref().map_or(0, String::len);
            states.push(state_of(record, query.fetch_inputs_and_outputs));
        }
        Ok(Response::new(proto::QueryInstancesResponse {
            orchestration_state: states,
            continuation_token: next,
        }))
    }

    async fn purge_instances(
        &self,
        request: Request<proto::PurgeInstancesRequest>,
    ) -> Result<Response<proto::PurgeInstancesResponse>, Status> {
        let principal = self.caller(&request).await?;
        principal.require(Scope::Signal).map_err(status)?;
        let purge = request.into_inner();
        let engine = &self.state.engine;
        let deleted = match purge.request {
            Some(proto::purge_instances_request::Request::InstanceId(local)) => {
                let id = principal.instance(&local).map_err(status)?;
                engine.purge(&id, false).await.map_err(engine_status)?
            }
            Some(proto::purge_instances_request::Request::PurgeInstanceFilter(filter)) => {
                // Ended instances matching the filter, a page at a time.
                let wanted = statuses(&filter.runtime_status)?;
                let mut deleted = 0;
                let mut after = None;
                // Bounded per call: the caller asks again while is_complete is false.
                let mut complete = true;
                let mut looked = 0;
                loop {
                    if looked >= MAX_PURGE_SCAN {
                        complete = false;
                        break;
                    }
                    let page = InstanceFilter {
                        created_after: filter
                            .created_time_from
                            .as_ref()
                            .map(|t| Timestamp(millis(t))),
                        created_before: filter
                            .created_time_to
                            .as_ref()
                            .map(|t| Timestamp(millis(t))),
                        after: after.clone(),
                        limit: 500,
                        ..InstanceFilter::default()
                    };
                    let tenant = principal.tenant.clone();
                    let records = super::blocking(&self.state, move |engine| {
                        engine.list_instances(&tenant, &page)
                    })
                    .await
                    .map_err(status)?;
                    looked += records.len();
                    for record in &records {
                        let matches = wanted.is_empty() || wanted.contains(&record.status);
                        if matches && record.status.is_terminal() {
                            match engine.purge(&record.id, false).await {
                                Ok(n) => deleted += n,
                                Err(_) => complete = false,
                            }
                        }
                    }
                    match records.last() {
                        Some(last) if records.len() == 500 => {
                            after = Some(last.id.local().to_owned());
                        }
                        _ => break,
                    }
                }
                return Ok(Response::new(proto::PurgeInstancesResponse {
                    deleted_instance_count: i32::try_from(deleted).unwrap_or(i32::MAX),
                    is_complete: Some(complete),
                }));
            }
            None => {
                return Err(Status::invalid_argument(
                    "name an instance id or a purge filter",
                ));
            }
        };
        Ok(Response::new(proto::PurgeInstancesResponse {
            deleted_instance_count: i32::try_from(deleted).unwrap_or(i32::MAX),
            is_complete: Some(true),
        }))
    }
}

/// Most instances one purge-by-filter call looks at.
const MAX_PURGE_SCAN: usize = 10_000;

/// Serves the protocol on `listener` until `shutdown` resolves.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tonic::transport::Server::builder()
        .timeout(Duration::from_secs(3600))
        // A worker that vanished without closing its socket is noticed, and its tasks go
        // to another worker; one connection cannot multiplex without bound.
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .max_concurrent_streams(Some(256))
        .concurrency_limit_per_connection(256)
        .add_service(Sidecar::server(state))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
