//! `tollgate.enforcement.v1.Enforcement/Watch`, served beside OTLP/gRPC.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tollgate_proto::enforcement::v1 as pb;
use tollgate_proto::enforcement::v1::enforcement_server::{Enforcement, EnforcementServer};
use tonic::{Request, Response, Status};

use super::state::{EnforcementState, KillSwitch, Scope};

/// The gRPC face of the kill-switch.
#[derive(Debug, Clone)]
pub struct EnforcementService {
    killswitch: KillSwitch,
}

/// The tonic service, ready to add to the gRPC server.
pub fn enforcement_service(killswitch: KillSwitch) -> EnforcementServer<EnforcementService> {
    EnforcementServer::new(EnforcementService { killswitch })
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// The asker of a gRPC watch.
fn scope_of(s: pb::Scope) -> Scope {
    Scope {
        org: non_empty(s.org),
        project: non_empty(s.project),
        app: non_empty(s.app),
        environment: non_empty(s.environment),
        user: non_empty(s.user),
        session: non_empty(s.session),
        key: non_empty(s.key),
        route: non_empty(s.route),
    }
}

impl From<EnforcementState> for pb::EnforcementState {
    fn from(s: EnforcementState) -> Self {
        pb::EnforcementState {
            blocked: s.blocked,
            blocks: s
                .blocks
                .into_iter()
                .map(|b| pb::Block {
                    rule_id: b.rule_id,
                    scope: b.scope,
                    reason: b.reason,
                    until_unix_nanos: b.until_unix_nanos,
                    limit: b.limit,
                    used: b.used,
                    metric: b.metric,
                })
                .collect(),
            revision: s.revision,
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::EnforcementState, Status>> + Send>>;

#[tonic::async_trait]
impl Enforcement for EnforcementService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let tenant = request
            .extensions()
            .get::<crate::query::Tenant>()
            .cloned()
            .unwrap_or_default();
        let scope = super::within(
            scope_of(request.into_inner().scope.unwrap_or_default()),
            &tenant,
        )
        .map_err(Status::permission_denied)?;
        let states = self
            .killswitch
            .watch(scope)
            .map(|s| Ok(pb::EnforcementState::from(s)));
        Ok(Response::new(Box::pin(states)))
    }
}
