//! Deploying, starting and managing instances: the engine's public control surface, all
//! of it scoped by tenant.

use std::sync::Arc;

use super::compat::{self, Compatibility};
use super::{
    ComponentKind, Deployment, Engine, EngineError, ReusePolicy, StartOptions, check_json,
};
use crate::journal::{InstanceFilter, InstanceRecord, JournalError, NewInstance, TokenRecord};
use crate::model::{Digest, InstanceId, Tenant};

/// How often `check_deploy --migrate` re-checks an instance that kept changing while it
/// was being checked.
const MIGRATE_TRIES: u32 = 3;

/// One version of a workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowVersion {
    pub version: u32,
    pub digest: Digest,
}

/// A workflow and its versions, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowInfo {
    pub name: String,
    pub versions: Vec<WorkflowVersion>,
}

/// What `check_deploy` found for one live instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceCheck {
    pub instance: InstanceId,
    pub workflow: String,
    pub compatibility: Compatibility,
    /// True when `migrate` moved the instance to the new version.
    pub migrated: bool,
}

/// What an API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Create tenants and tokens; everything else too.
    Admin,
    Deploy,
    Start,
    /// Raise events, terminate, suspend, resume.
    Signal,
    Read,
    /// Scrape `/metrics`: every tenant's counts, so only an admin can issue it.
    Metrics,
}

impl Scope {
    pub const ALL: [Scope; 6] = [
        Scope::Admin,
        Scope::Deploy,
        Scope::Start,
        Scope::Signal,
        Scope::Read,
        Scope::Metrics,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Deploy => "deploy",
            Scope::Start => "start",
            Scope::Signal => "signal",
            Scope::Read => "read",
            Scope::Metrics => "metrics",
        }
    }

    pub fn parse(s: &str) -> Result<Scope, String> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown scope '{s}'; scopes are admin, deploy, start, signal, read and metrics"
                )
            })
    }
}

impl Engine {
    /// Deploys a component for the default tenant.
    pub async fn deploy(&self, bytes: Vec<u8>) -> Result<Deployment, EngineError> {
        self.deploy_to(&Tenant::default_tenant(), bytes).await
    }

    /// `tenant`'s turn to upload a component; take it before reading the upload. Fails
    /// with [`EngineError::Busy`] while the tenant has another upload in progress or the
    /// host's upload queue is full.
    pub fn upload_ticket(&self, tenant: &Tenant) -> Result<super::UploadTicket, EngineError> {
        super::UploadTicket::take(&self.shared.compiles, tenant)
    }

    /// Validates, compiles and stores a component for `tenant`. New starts of its
    /// workflows get this version; running instances stay on the version they started
    /// with. Deploying the same bytes again is harmless.
    pub async fn deploy_to(
        &self,
        tenant: &Tenant,
        bytes: Vec<u8>,
    ) -> Result<Deployment, EngineError> {
        let ticket = self.upload_ticket(tenant)?;
        self.deploy_with(&ticket, bytes).await
    }

    /// [`Engine::deploy_to`] with the tenant's ticket already taken. The deploy runs to
    /// its end in a task of its own, even if the caller stops waiting: journal and
    /// registry never disagree about what was deployed.
    pub async fn deploy_with(
        &self,
        ticket: &super::UploadTicket,
        bytes: Vec<u8>,
    ) -> Result<Deployment, EngineError> {
        let (engine, ticket) = (self.clone(), ticket.clone());
        tokio::spawn(async move { engine.deploy_now(&ticket, bytes).await })
            .await
            .map_err(|e| {
                EngineError::from(crate::sandbox::SandboxError::Compile(format!(
                    "the deploy stopped: {e}"
                )))
            })?
    }

    async fn deploy_now(
        &self,
        ticket: &super::UploadTicket,
        bytes: Vec<u8>,
    ) -> Result<Deployment, EngineError> {
        let tenant = ticket.tenant();
        self.require_tenant(tenant)?;
        let (digest, bytes) = super::components::digest_of(bytes).await;
        let inspected = self
            .shared
            .inspect_upload(ticket, &digest, Arc::clone(&bytes))
            .await?;
        self.deploy_inspected(tenant, digest, bytes, &inspected)
            .await
    }

    /// Journals, registers and caches a component that passed every check.
    async fn deploy_inspected(
        &self,
        tenant: &Tenant,
        digest: Digest,
        bytes: Arc<Vec<u8>>,
        inspected: &super::components::Inspected,
    ) -> Result<Deployment, EngineError> {
        let (kind, names) = (inspected.kind, inspected.names.clone());
        let bytes = Arc::try_unwrap(bytes).unwrap_or_else(|shared| Vec::clone(&shared));
        let now = self.shared.clock.now();
        let versions = self
            .shared
            .journal
            .deploy_component(
                tenant.clone(),
                digest.clone(),
                kind.as_str(),
                names.clone(),
                bytes,
                now,
            )
            .await?;
        self.shared.accept(&digest, inspected).await;
        let mut registry = self.shared.registry_mut();
        match kind {
            ComponentKind::Orchestrator => {
                for (workflow, version) in &versions {
                    registry.set_version(tenant.as_str(), workflow, *version, digest.clone());
                }
            }
            ComponentKind::Activity => registry.own_activities(tenant.as_str(), &digest),
        }
        Ok(Deployment {
            digest,
            kind,
            names,
            versions,
        })
    }

    /// Replays every live instance of the component's workflows against it, with no side
    /// effects, and reports which are compatible. With `migrate`, the component is also
    /// deployed and the compatible instances move to it (each switches when it is next
    /// idle).
    pub async fn check_deploy(
        &self,
        tenant: &Tenant,
        bytes: Vec<u8>,
        migrate: bool,
    ) -> Result<(Option<Deployment>, Vec<InstanceCheck>), EngineError> {
        let ticket = self.upload_ticket(tenant)?;
        self.check_deploy_with(&ticket, bytes, migrate).await
    }

    /// [`Engine::check_deploy`] with the tenant's ticket already taken; runs to its end in
    /// a task of its own, like [`Engine::deploy_with`].
    pub async fn check_deploy_with(
        &self,
        ticket: &super::UploadTicket,
        bytes: Vec<u8>,
        migrate: bool,
    ) -> Result<(Option<Deployment>, Vec<InstanceCheck>), EngineError> {
        let (engine, ticket) = (self.clone(), ticket.clone());
        tokio::spawn(async move { engine.check_deploy_now(&ticket, bytes, migrate).await })
            .await
            .map_err(|e| {
                EngineError::from(crate::sandbox::SandboxError::Compile(format!(
                    "the check stopped: {e}"
                )))
            })?
    }

    async fn check_deploy_now(
        &self,
        ticket: &super::UploadTicket,
        bytes: Vec<u8>,
        migrate: bool,
    ) -> Result<(Option<Deployment>, Vec<InstanceCheck>), EngineError> {
        let tenant = ticket.tenant();
        self.require_tenant(tenant)?;
        let (digest, bytes) = super::components::digest_of(bytes).await;
        let inspected = self
            .shared
            .inspect_upload(ticket, &digest, Arc::clone(&bytes))
            .await?;
        let super::registry::Loaded::Orchestrator(pre) = &*inspected.loaded else {
            return Ok((None, Vec::new()));
        };
        let pre = pre.clone();
        let names = inspected.names.clone();
        // Without `migrate` the component is only checked: nothing of it is kept.
        let deployment = if migrate {
            Some(
                self.deploy_inspected(tenant, digest.clone(), bytes, &inspected)
                    .await?,
            )
        } else {
            None
        };
        let mut report = Vec::new();
        for workflow in &names {
            for id in self.shared.journal.live_instances(tenant, workflow)? {
                if let Some(check) = self
                    .check_instance(&id, workflow, &digest, &pre, migrate)
                    .await?
                {
                    report.push(check);
                }
            }
        }
        Ok((deployment, report))
    }

    /// Checks one instance against the new component and, with `migrate`, moves it if
    /// compatible. The move is conditional on the journal being exactly what was checked;
    /// an instance that made progress meanwhile is checked again (a few times, then it is
    /// reported as not migrated, to be tried again later). `None` if it already runs on
    /// the new component.
    async fn check_instance(
        &self,
        id: &InstanceId,
        workflow: &str,
        digest: &Digest,
        pre: &super::bindings::orchestrator::OrchestratorPre<super::activation::HostState>,
        migrate: bool,
    ) -> Result<Option<InstanceCheck>, EngineError> {
        let mut tries = 0;
        loop {
            let record = match self.status(id) {
                Ok(record) => record,
                // Purged while the check ran: nothing left to check.
                Err(EngineError::InstanceNotFound(_)) => return Ok(None),
                Err(e) => return Err(e),
            };
            if record.component == *digest {
                return Ok(None);
            }
            let (compatibility, upto) =
                compat::check_compatible(&self.shared, &record, pre.clone()).await;
            let mut check = InstanceCheck {
                instance: id.clone(),
                workflow: workflow.to_owned(),
                compatibility,
                migrated: false,
            };
            if !migrate || check.compatibility != Compatibility::Compatible {
                return Ok(Some(check));
            }
            check.migrated = self
                .shared
                .journal
                .migrate_instance(
                    id.clone(),
                    record.component.clone(),
                    record.generation,
                    upto,
                    digest.clone(),
                )
                .await?;
            tries += 1;
            if check.migrated || tries == MIGRATE_TRIES {
                if check.migrated {
                    // Its activation on the old code is fenced off; it replays on the new.
                    self.request_eviction(id);
                }
                return Ok(Some(check));
            }
        }
    }

    /// A tenant's workflows and their versions.
    pub fn workflows(&self, tenant: &Tenant) -> Vec<WorkflowInfo> {
        self.shared
            .registry()
            .workflows_of(tenant.as_str())
            .into_iter()
            .map(|(name, digests)| WorkflowInfo {
                name,
                versions: digests
                    .into_iter()
                    .enumerate()
                    .map(|(i, digest)| WorkflowVersion {
                        version: i as u32 + 1,
                        digest,
                    })
                    .collect(),
            })
            .collect()
    }

    /// The version number of the component an instance runs on.
    pub fn version_of(&self, record: &InstanceRecord) -> Option<u32> {
        self.shared
            .registry()
            .version_of(record.id.tenant(), &record.workflow, &record.component)
    }

    /// Starts workflow `workflow` with JSON `input`; returns the instance id.
    pub async fn start(
        &self,
        workflow: &str,
        input: &str,
        options: StartOptions,
    ) -> Result<InstanceId, EngineError> {
        let tenant = options
            .tenant
            .clone()
            .unwrap_or_else(Tenant::default_tenant);
        let mut component = self.shared.workflow_component(&tenant, workflow);
        if component.is_none() && self.shared.journal.is_shared() {
            // Perhaps deployed through another host a moment ago.
            self.shared.load_deployments().await?;
            component = self.shared.workflow_component(&tenant, workflow);
        }
        let Some(component) = component else {
            let deployed = self
                .workflows(&tenant)
                .into_iter()
                .map(|w| w.name)
                .collect();
            return Err(EngineError::UnknownWorkflow {
                name: workflow.to_owned(),
                deployed,
            });
        };
        check_json("the workflow input", input)?;
        self.check_payload(tenant.as_str(), "the workflow input", input)?;
        let id = match &options.instance_id {
            Some(local) => {
                InstanceId::scoped(&tenant, local).map_err(EngineError::InvalidInstanceId)?
            }
            None => {
                let uuid = self
                    .shared
                    .ids
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .uuid();
                InstanceId::scoped(&tenant, &uuid).map_err(EngineError::InvalidInstanceId)?
            }
        };
        let new = NewInstance {
            id: id.clone(),
            workflow: workflow.to_owned(),
            component,
            input: input.to_owned(),
            max_live: self.shared.limits(tenant.as_str()).max_live_instances,
            start_at: options.start_at,
            traceparent: options
                .traceparent
                .as_deref()
                .filter(|t| crate::traces::parse_traceparent(t).is_some())
                .map(str::to_owned),
        };
        let mut now = self.shared.clock.now();
        let created = match self.shared.journal.create_instance(new.clone(), now).await {
            Ok(created) => created,
            Err(JournalError::InstanceExists(_)) if options.reuse == ReusePolicy::Ignore => {
                return Ok(id);
            }
            Err(JournalError::InstanceExists(_))
                if options.reuse == ReusePolicy::TerminateExisting =>
            {
                self.terminate_if_live(&id, "replaced by a new start with the same id")
                    .await?;
                self.purge(&id, true).await?;
                now = self.shared.clock.now();
                self.shared
                    .journal
                    .create_instance(new.clone(), now)
                    .await?
            }
            Err(e) => return Err(e.into()),
        };
        match options.start_at {
            // On PostgreSQL the activation reads its lease before the journal.
            Some(at) if at > now => self.shared.activate_at(id.clone(), Some(at), now),
            _ if self.shared.journal.is_shared() => self.shared.activate(id.clone()),
            _ => self.shared.activate_with(
                id.clone(),
                Some(super::run::Preload::new(new, created, now)),
            ),
        }
        self.shared
            .metrics
            .workflow_started(tenant.as_str(), workflow);
        Ok(id)
    }

    /// Terminates a pending, running or suspended instance and its unfinished children.
    pub async fn terminate(
        &self,
        id: &InstanceId,
        reason: &str,
    ) -> Result<Vec<InstanceId>, EngineError> {
        let now = self.shared.clock.now();
        let terminated = self
            .shared
            .journal
            .terminate(id.clone(), reason.to_owned(), now)
            .await?;
        // Counted and traced by workflow: journal reads, on a blocking thread.
        let (engine, ended) = (self.clone(), terminated.clone());
        let _ = tokio::task::spawn_blocking(move || {
            for instance in &ended {
                if let Ok(Some(record)) = engine.shared.journal.instance(instance) {
                    engine.shared.metrics.workflow_ended(
                        instance.tenant(),
                        &record.workflow,
                        "terminated",
                    );
                    engine.trace_terminated(&record);
                }
            }
        })
        .await;
        for instance in &terminated {
            self.shared
                .timers
                .cancel_instance(instance, &self.shared.work);
            self.request_eviction(instance);
            self.shared.status_changed(instance);
        }
        Ok(terminated)
    }

    /// Suspends a running instance: it leaves memory, and whatever arrives meanwhile
    /// (events, timers, activity results) is journaled and delivered on resume.
    pub async fn suspend(&self, id: &InstanceId, reason: &str) -> Result<(), EngineError> {
        let now = self.shared.clock.now();
        self.shared
            .journal
            .set_suspended(id.clone(), true, reason.to_owned(), now)
            .await?;
        self.request_eviction(id);
        self.shared.status_changed(id);
        Ok(())
    }

    /// Resumes a suspended instance.
    pub async fn resume(&self, id: &InstanceId, reason: &str) -> Result<(), EngineError> {
        let now = self.shared.clock.now();
        self.shared
            .journal
            .set_suspended(id.clone(), false, reason.to_owned(), now)
            .await?;
        let start_at = self.status(id)?.start_at;
        self.shared.activate_at(id.clone(), start_at, now);
        self.shared.status_changed(id);
        Ok(())
    }

    /// Deletes an ended instance (and its children) from the journal; `force` terminates
    /// a live one first.
    pub async fn purge(&self, id: &InstanceId, force: bool) -> Result<u64, EngineError> {
        if force {
            self.terminate_if_live(id, "purged").await?;
        }
        let purged = self.shared.journal.purge(id.clone(), force).await?;
        // Whatever of them is still in memory leaves; its writes are fenced off already.
        for instance in &purged {
            self.shared
                .timers
                .cancel_instance(instance, &self.shared.work);
            self.request_eviction(instance);
            self.shared.status_changed(instance);
        }
        Ok(purged.len() as u64)
    }

    /// Terminates the instance unless it has ended (also if it ends while we ask).
    async fn terminate_if_live(&self, id: &InstanceId, reason: &str) -> Result<(), EngineError> {
        if self.status(id)?.status.is_terminal() {
            return Ok(());
        }
        match self.terminate(id, reason).await {
            Ok(_) | Err(EngineError::NotRunning { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A page of a tenant's instances.
    pub fn list_instances(
        &self,
        tenant: &Tenant,
        filter: &InstanceFilter,
    ) -> Result<Vec<InstanceRecord>, EngineError> {
        Ok(self.shared.journal.list_instances(tenant, filter)?)
    }

    /// How many live instances of a tenant are pinned to each workflow version:
    /// (workflow, component digest in hex) -> count.
    pub fn live_counts(
        &self,
        tenant: &Tenant,
    ) -> Result<std::collections::HashMap<(String, String), u64>, EngineError> {
        Ok(self.shared.journal.live_counts(tenant)?)
    }

    /// Creates a tenant; false if it existed.
    pub async fn create_tenant(&self, tenant: &Tenant) -> Result<bool, EngineError> {
        Ok(self
            .shared
            .journal
            .create_tenant(tenant.clone(), self.shared.clock.now())
            .await?)
    }

    /// Issues a new bearer token for `tenant` with `scopes`. Only its hash is stored: the
    /// returned text is the only copy.
    pub async fn issue_token(
        &self,
        tenant: &Tenant,
        scopes: &[Scope],
        label: &str,
    ) -> Result<String, EngineError> {
        self.require_tenant(tenant)?;
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| {
            EngineError::Journal(JournalError::Storage(format!(
                "no system randomness for a token: {e}"
            )))
        })?;
        let token = format!("sf_{}", hex(&secret));
        let scopes = scopes.iter().map(|s| s.as_str().to_owned()).collect();
        let now = self.shared.clock.now();
        self.shared
            .journal
            .add_token(
                token_hash(&token),
                tenant.clone(),
                scopes,
                label.to_owned(),
                now,
            )
            .await?;
        Ok(token)
    }

    /// The tenant and scopes of a bearer token, if it is one we issued.
    pub fn authenticate(&self, token: &str) -> Result<Option<TokenRecord>, EngineError> {
        self.token_by_hash(&token_hash(token))
    }

    /// The token whose [`token_hash`] is `hash`.
    pub fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, EngineError> {
        Ok(self.shared.journal.token(hash)?)
    }

    fn require_tenant(&self, tenant: &Tenant) -> Result<(), EngineError> {
        if self.shared.journal.tenant_exists(tenant)? {
            Ok(())
        } else {
            Err(EngineError::UnknownTenant(tenant.clone()))
        }
    }

    fn request_eviction(&self, id: &InstanceId) {
        self.shared.request_eviction(id);
    }
}

/// What the journal keeps of a token: its SHA-256, in hex.
pub fn token_hash(token: &str) -> String {
    use sha2::Digest as _;
    hex(&sha2::Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
