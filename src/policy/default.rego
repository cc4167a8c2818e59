# The built-in policy of executor-service. Replace it with --policy FILE; the same
# `data.config` (from flags) and `input` (below) are available to a custom policy, which must
# define `data.executor.decision` the same way.
#
# input:
#   action:      name, e.g. "drain_node"
#   risk:        "low" | "medium" | "high"
#   read_only:   true when the action changes nothing
#   target:      {cluster, namespace, kind, name}
#   parameters:  validated parameters, defaults applied
#   requester:   identity of the caller ("anonymous" without authentication)
#   changes:     [{object, summary, before, after}] from the action's dry-run plan
#   cluster:     {schedulable_nodes, target_node_schedulable (node targets only)}
package executor

import rego.v1

namespaced := input.target.kind != "Node"

deny contains msg if {
	namespaced
	not input.read_only
	input.target.namespace in data.config.protected_namespaces
	msg := sprintf("namespace %s is protected: no changes are made there", [input.target.namespace])
}

# The same for the objects an action changes beyond its target (restart_network aimed at the
# kube-system namespace, the workloads a secret rotation restarts). Pods a drain evicts are
# not changes to the namespace's objects: their controllers replace them.
deny contains msg if {
	not input.read_only
	some change in input.changes
	parts := split(change.object, "/")
	count(parts) == 3
	parts[1] != "pod"
	parts[0] != input.target.namespace
	parts[0] in data.config.protected_namespaces
	msg := sprintf("%s is in protected namespace %s: no changes are made there", [change.object, parts[0]])
}

deny contains msg if {
	some change in input.changes
	replicas := change.after.spec.replicas
	replicas > data.config.max_replicas
	msg := sprintf("%s would have %d replicas, above the ceiling of %d", [change.object, replicas, data.config.max_replicas])
}

# Never take the last schedulable node out of scheduling.
deny contains msg if {
	input.action in {"cordon_node", "drain_node"}
	input.cluster.target_node_schedulable
	input.cluster.schedulable_nodes <= 1
	msg := sprintf("node %s is the last schedulable node", [input.target.name])
}

deny contains msg if {
	input.action == "drain_node"
	input.cluster.schedulable_nodes < data.config.min_schedulable_nodes_for_drain
	msg := sprintf("drain needs at least %d schedulable nodes, the cluster has %d", [data.config.min_schedulable_nodes_for_drain, input.cluster.schedulable_nodes])
}

# The actions that work on any kind never touch these unless your policy allows it: what
# they hold (Secrets), who may do what (RBAC), what admits objects (webhooks, CRDs), and
# the cluster's own shape (namespaces, nodes).
generic_actions := {"apply_manifest", "delete_resource", "patch_resource"}

denied_generic_kinds := {
	"secret", "serviceaccount", "role", "rolebinding", "clusterrole", "clusterrolebinding",
	"customresourcedefinition", "mutatingwebhookconfiguration", "validatingwebhookconfiguration",
	"namespace", "node",
}

deny contains msg if {
	input.action in generic_actions
	some change in input.changes
	parts := split(change.object, "/")
	kind := parts[count(parts) - 2]
	kind in denied_generic_kinds
	msg := sprintf("%s: %s does not change %s objects (allow them in your policy)", [change.object, input.action, kind])
}

approval contains msg if {
	input.risk == "high"
	msg := sprintf("%s is a high-risk action and needs an approval", [input.action])
}

decision := {
	"allow": count(deny) == 0,
	"require_approval": count(approval) > 0,
	"reasons": array.concat(sort([m | some m in deny]), sort([m | some m in approval])),
}
