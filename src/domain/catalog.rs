//! The action catalog as the doors show it (`ListActions`): what each action is, how risky,
//! what it targets and which parameters it takes.

use serde_json::Value;

/// How much damage an action can do when it goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    Low,
    Medium,
    High,
}

/// What an action is, as `ListActions` shows it.
#[derive(Debug, Clone)]
pub struct ActionSpec {
    pub name: &'static str,
    pub description: &'static str,
    pub risk: Risk,
    /// Kinds the action accepts as target; the first is the default when the request names none.
    pub target_kinds: &'static [&'static str],
    pub params: Vec<ParamSpec>,
    /// What the action's code calls in the cluster, as RBAC rules; `deploy/rbac-actions.yaml`
    /// is generated from it.
    pub access: &'static [Access],
}

/// One RBAC rule an action needs: verbs on resources of an API group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// The API group; `""` is the core group.
    pub group: &'static str,
    /// Resources, subresources as `pods/eviction`.
    pub resources: &'static [&'static str],
    pub verbs: &'static [&'static str],
}

impl Access {
    /// `verbs` on `resources` of `group`.
    pub const fn new(
        group: &'static str,
        resources: &'static [&'static str],
        verbs: &'static [&'static str],
    ) -> Self {
        Access {
            group,
            resources,
            verbs,
        }
    }
}

/// The type of a parameter, as `ListActions` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    Integer,
    String,
    Boolean,
    /// A Kubernetes resource quantity such as `500m` or `1Gi`.
    Quantity,
    /// A bundle of text files: a JSON object of relative path → content.
    Files,
}

impl ParamType {
    /// How an error message names the type: "an integer".
    pub fn name(self) -> &'static str {
        match self {
            ParamType::Integer => "an integer",
            ParamType::String => "a string",
            ParamType::Boolean => "a boolean",
            ParamType::Quantity => "a quantity such as 500m or 1Gi",
            ParamType::Files => "an object of file path to content",
        }
    }
}

/// One parameter of an action.
#[derive(Debug, Clone)]
pub struct ParamSpec {
    pub name: &'static str,
    pub ty: ParamType,
    pub description: &'static str,
    pub required: bool,
    pub default: Option<Value>,
    /// Inclusive bounds for integers.
    pub min: Option<i64>,
    pub max: Option<i64>,
    /// The only values a string may take; empty = any.
    pub allowed: &'static [&'static str],
}

impl ParamSpec {
    pub fn new(name: &'static str, ty: ParamType, description: &'static str) -> Self {
        ParamSpec {
            name,
            ty,
            description,
            required: false,
            default: None,
            min: None,
            max: None,
            allowed: &[],
        }
    }
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }
    pub fn default(mut self, value: impl Into<Value>) -> Self {
        self.default = Some(value.into());
        self
    }
    pub fn one_of(mut self, allowed: &'static [&'static str]) -> Self {
        self.allowed = allowed;
        self
    }
    pub fn bounds(mut self, min: i64, max: i64) -> Self {
        self.min = Some(min);
        self.max = Some(max);
        self
    }
}
