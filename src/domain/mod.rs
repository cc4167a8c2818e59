//! The vocabulary every part speaks: executions, their events and states, targets, list
//! filters and page limits, and the action catalog's descriptors. Both the engine and the
//! store use these types; this module imports nothing else of the crate, so neither can reach
//! the other through it.

mod catalog;
mod code;
mod execution;
mod target;

pub use catalog::{Access, ActionSpec, ParamSpec, ParamType, Risk};
pub use code::{api_id_of, code_object_name, is_uuid, CODE_NAME_PREFIX, DEFAULT_CODE_NAMESPACE};
pub use execution::{
    AlertContext, Encoded, Event, ExecutionRequest, ExecutionState, ExecutionView, ListFilter,
    Recommendation, RequestedTarget, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, MAX_PRIORITY,
};
pub use target::Target;
