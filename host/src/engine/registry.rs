//! What is deployed: components by digest (compiled once, shared), and per tenant the
//! versions of each workflow and the component serving each activity name.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::activation::HostState;
use super::activities::NativeActivity;
use super::activity_host::ActivityState;
use super::bindings::activity::ActivityWorkerPre;
use super::bindings::orchestrator::OrchestratorPre;
use crate::model::Digest;

pub(crate) enum Loaded {
    Orchestrator(OrchestratorPre<HostState>),
    Activity(ActivityWorkerPre<ActivityState>),
}

/// How an activity name is served.
#[derive(Clone)]
pub(crate) enum ActivityImpl {
    Native(NativeActivity),
    Component(Digest),
}

/// `(tenant, name)`.
type Key = (String, String);

#[derive(Default)]
pub(crate) struct Registry {
    components: HashMap<Digest, Arc<Loaded>>,
    /// Names each component implements, as found at deploy time.
    names: HashMap<Digest, Vec<String>>,
    /// Versions of each workflow, oldest first (version n is at index n - 1).
    workflows: BTreeMap<Key, Vec<Digest>>,
    activities: BTreeMap<Key, Digest>,
    /// Native activities serve every tenant and win over components of the same name.
    natives: BTreeMap<String, NativeActivity>,
}

impl Registry {
    pub(crate) fn add_component(
        &mut self,
        digest: Digest,
        loaded: Arc<Loaded>,
        names: Vec<String>,
    ) {
        self.components.insert(digest.clone(), loaded);
        self.names.insert(digest, names);
    }

    /// Every component loaded.
    pub(crate) fn component_digests(&self) -> std::collections::HashSet<Digest> {
        self.components.keys().cloned().collect()
    }

    /// The names a loaded component serves.
    pub(crate) fn names_of(&self, digest: &Digest) -> Option<Vec<String>> {
        self.names.get(digest).cloned()
    }

    /// Records version `version` of `workflow` for `tenant`.
    pub(crate) fn set_version(
        &mut self,
        tenant: &str,
        workflow: &str,
        version: u32,
        digest: Digest,
    ) {
        let versions = self
            .workflows
            .entry((tenant.to_owned(), workflow.to_owned()))
            .or_default();
        let index = version.saturating_sub(1) as usize;
        if versions.len() <= index {
            versions.resize(index + 1, digest.clone());
        }
        versions[index] = digest;
    }

    /// Makes a tenant's activity names point at an activity component.
    pub(crate) fn own_activities(&mut self, tenant: &str, digest: &Digest) {
        if let Some(names) = self.names.get(digest) {
            for name in names {
                self.activities
                    .insert((tenant.to_owned(), name.clone()), digest.clone());
            }
        }
    }

    pub(crate) fn add_native(&mut self, name: String, activity: NativeActivity) {
        self.natives.insert(name, activity);
    }

    /// The newest version of a tenant's workflow: (version, digest).
    pub(crate) fn latest(&self, tenant: &str, workflow: &str) -> Option<(u32, Digest)> {
        let versions = self
            .workflows
            .get(&(tenant.to_owned(), workflow.to_owned()))?;
        versions.last().map(|d| (versions.len() as u32, d.clone()))
    }

    /// Every version of every workflow of a tenant: (name, [digest of v1, v2, ...]).
    pub(crate) fn workflows_of(&self, tenant: &str) -> Vec<(String, Vec<Digest>)> {
        self.workflows
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|((_, name), versions)| (name.clone(), versions.clone()))
            .collect()
    }

    pub(crate) fn version_of(&self, tenant: &str, workflow: &str, digest: &Digest) -> Option<u32> {
        let versions = self
            .workflows
            .get(&(tenant.to_owned(), workflow.to_owned()))?;
        versions
            .iter()
            .position(|d| d == digest)
            .map(|i| i as u32 + 1)
    }

    pub(crate) fn component(&self, digest: &Digest) -> Option<Arc<Loaded>> {
        self.components.get(digest).cloned()
    }

    pub(crate) fn activity(&self, tenant: &str, name: &str) -> Option<ActivityImpl> {
        if let Some(native) = self.natives.get(name) {
            return Some(ActivityImpl::Native(Arc::clone(native)));
        }
        self.activities
            .get(&(tenant.to_owned(), name.to_owned()))
            .map(|d| ActivityImpl::Component(d.clone()))
    }

    pub(crate) fn activity_names(&self, tenant: &str) -> Vec<String> {
        let mut names: Vec<String> = self.natives.keys().cloned().collect();
        names.extend(
            self.activities
                .keys()
                .filter(|(t, _)| t == tenant)
                .map(|(_, n)| n.clone()),
        );
        names.sort();
        names.dedup();
        names
    }
}
