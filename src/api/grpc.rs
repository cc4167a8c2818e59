//! `executor.v1.ExecutorService`: each handler translates the request, calls the engine and
//! translates back. Nothing else happens here.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::{auth::grpc_caller, convert, proto};
use crate::{domain::ListFilter, engine::Engine};

pub struct GrpcApi {
    engine: Engine,
}

impl GrpcApi {
    pub fn new(engine: Engine) -> Self {
        GrpcApi { engine }
    }

    /// Approve or reject: an authenticated caller is the approver, whatever the request says.
    async fn decide(
        &self,
        caller: &super::Caller,
        id: &str,
        approve: bool,
        approver: &str,
        reason: &str,
    ) -> Result<proto::Execution, Status> {
        let execution = self
            .engine
            .decide_approval(id, approve, &caller.approver(approver), reason)
            .await?;
        Ok(convert::execution_to(&execution))
    }
}

type EventStream =
    Pin<Box<dyn Stream<Item = Result<proto::WatchExecutionResponse, Status>> + Send>>;

#[tonic::async_trait]
impl proto::executor_service_server::ExecutorService for GrpcApi {
    async fn execute(
        &self,
        request: Request<proto::ExecuteRequest>,
    ) -> Result<Response<proto::ExecuteResponse>, Status> {
        let caller = grpc_caller(&request);
        let request = request.into_inner();
        let wait = request.wait;
        let mut domain = convert::execute_request(request)?;
        domain.requester = caller.identity;
        domain.trace_id = crate::telemetry::current_trace_id();
        let mut execution = self.engine.submit(domain).await?;
        if wait {
            execution = self.engine.wait(&execution.id).await?;
        }
        Ok(Response::new(proto::ExecuteResponse {
            execution: Some(convert::execution_to(&execution)),
        }))
    }

    async fn dry_run(
        &self,
        request: Request<proto::DryRunRequest>,
    ) -> Result<Response<proto::DryRunResponse>, Status> {
        let caller = grpc_caller(&request);
        let mut domain = convert::dry_run_request(request.into_inner());
        domain.requester = caller.identity;
        let report = self.engine.dry_run(domain).await?;
        Ok(Response::new(convert::dry_run_to(&report)))
    }

    type WatchExecutionStream = EventStream;

    /// Reached only when the generated service is mounted on its own: [`super::serve_with`]
    /// mounts [`super::watch::ExecutorRoutes`], which sends the same messages encoded once for
    /// all subscribers.
    async fn watch_execution(
        &self,
        request: Request<proto::WatchExecutionRequest>,
    ) -> Result<Response<Self::WatchExecutionStream>, Status> {
        let caller = grpc_caller(&request);
        let request = request.into_inner();
        let id = request.execution_id;
        let events = self
            .engine
            .watch(&id, request.from_sequence, &caller.identity)
            .await?;
        Ok(Response::new(Box::pin(events.map(move |event| {
            Ok(proto::WatchExecutionResponse {
                event: Some(convert::event_to(&id, &event)),
            })
        }))))
    }

    async fn get_execution(
        &self,
        request: Request<proto::GetExecutionRequest>,
    ) -> Result<Response<proto::GetExecutionResponse>, Status> {
        let caller = grpc_caller(&request);
        let request = request.into_inner();
        let (execution, events) = self
            .engine
            .get(&request.execution_id, &caller.identity)
            .await?;
        let events = if request.include_events {
            events
                .iter()
                .map(|e| convert::event_to(&execution.id, e))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Response::new(proto::GetExecutionResponse {
            execution: Some(convert::execution_to(&execution)),
            events,
        }))
    }

    async fn list_executions(
        &self,
        request: Request<proto::ListExecutionsRequest>,
    ) -> Result<Response<proto::ListExecutionsResponse>, Status> {
        let caller = grpc_caller(&request);
        let r = request.into_inner();
        let filter = ListFilter {
            state: convert::state_from(r.state)?,
            action: Some(r.action).filter(|a| !a.is_empty()),
            namespace: Some(r.namespace).filter(|n| !n.is_empty()),
            requester: Some(r.requester).filter(|n| !n.is_empty()),
            page_size: r.page_size as usize,
            page_token: r.page_token,
        };
        let (executions, next_page_token) = self.engine.list(&filter, &caller.identity).await?;
        Ok(Response::new(proto::ListExecutionsResponse {
            executions: executions.iter().map(convert::execution_to).collect(),
            next_page_token,
        }))
    }

    async fn cancel_execution(
        &self,
        request: Request<proto::CancelExecutionRequest>,
    ) -> Result<Response<proto::CancelExecutionResponse>, Status> {
        let caller = grpc_caller(&request);
        let r = request.into_inner();
        let execution = self
            .engine
            .cancel(&r.execution_id, &r.reason, &caller.identity)
            .await?;
        Ok(Response::new(proto::CancelExecutionResponse {
            execution: Some(convert::execution_to(&execution)),
        }))
    }

    async fn approve_execution(
        &self,
        request: Request<proto::ApproveExecutionRequest>,
    ) -> Result<Response<proto::ApproveExecutionResponse>, Status> {
        let caller = grpc_caller(&request);
        let r = request.into_inner();
        let execution = self
            .decide(&caller, &r.execution_id, true, &r.approver, &r.reason)
            .await?;
        Ok(Response::new(proto::ApproveExecutionResponse {
            execution: Some(execution),
        }))
    }

    async fn reject_execution(
        &self,
        request: Request<proto::RejectExecutionRequest>,
    ) -> Result<Response<proto::RejectExecutionResponse>, Status> {
        let caller = grpc_caller(&request);
        let r = request.into_inner();
        let execution = self
            .decide(&caller, &r.execution_id, false, &r.approver, &r.reason)
            .await?;
        Ok(Response::new(proto::RejectExecutionResponse {
            execution: Some(execution),
        }))
    }

    async fn list_actions(
        &self,
        _request: Request<proto::ListActionsRequest>,
    ) -> Result<Response<proto::ListActionsResponse>, Status> {
        Ok(Response::new(proto::ListActionsResponse {
            actions: self
                .engine
                .actions()
                .iter()
                .map(convert::action_to)
                .collect(),
        }))
    }
}
