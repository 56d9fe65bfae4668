//! What is deployed: components by digest, and which one serves each workflow and
//! activity name.

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

#[derive(Default)]
pub(crate) struct Registry {
    components: HashMap<Digest, Arc<Loaded>>,
    /// Newest component for each workflow name.
    workflows: BTreeMap<String, Digest>,
    activities: BTreeMap<String, ActivityImpl>,
}

impl Registry {
    pub(crate) fn add_orchestrator(
        &mut self,
        digest: Digest,
        pre: OrchestratorPre<HostState>,
        names: &[String],
    ) {
        for name in names {
            self.workflows.insert(name.clone(), digest.clone());
        }
        self.components
            .insert(digest, Arc::new(Loaded::Orchestrator(pre)));
    }

    pub(crate) fn add_activity_component(
        &mut self,
        digest: Digest,
        pre: ActivityWorkerPre<ActivityState>,
        names: &[String],
    ) {
        for name in names {
            // A native registration made by the embedding program wins over a component.
            if !matches!(self.activities.get(name), Some(ActivityImpl::Native(_))) {
                self.activities
                    .insert(name.clone(), ActivityImpl::Component(digest.clone()));
            }
        }
        self.components
            .insert(digest, Arc::new(Loaded::Activity(pre)));
    }

    pub(crate) fn add_native(&mut self, name: String, activity: NativeActivity) {
        self.activities.insert(name, ActivityImpl::Native(activity));
    }

    pub(crate) fn workflow_digest(&self, name: &str) -> Option<Digest> {
        self.workflows.get(name).cloned()
    }

    pub(crate) fn workflow_names(&self) -> Vec<String> {
        self.workflows.keys().cloned().collect()
    }

    pub(crate) fn component(&self, digest: &Digest) -> Option<Arc<Loaded>> {
        self.components.get(digest).cloned()
    }

    pub(crate) fn activity(&self, name: &str) -> Option<ActivityImpl> {
        self.activities.get(name).cloned()
    }

    pub(crate) fn activity_names(&self) -> Vec<String> {
        self.activities.keys().cloned().collect()
    }
}
