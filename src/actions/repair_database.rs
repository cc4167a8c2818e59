//! `repair_database`: suspected corruption. A Job runs the engine's own consistency checks
//! against the database behind a Service — PostgreSQL's `pg_amcheck` (B-tree and heap
//! checks, with `--heapallindexed` on request) or MySQL's `mysqlcheck --check`, and with
//! `repair: true` `mysqlcheck --auto-repair` / PostgreSQL `REINDEX DATABASE` — with the
//! credentials taken by the Job from a Secret the caller names (the executor never reads
//! them). The Job's log is the result; a check that finds corruption fails the execution with
//! its last lines.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    db_job::{check_names, connection_params, name, DbJob},
    job_run::{self, JobRun},
    Access, ActionContext, ActionError, ActionSpec, Outcome, ParamSpec, ParamType, Plan,
    Remediation, Risk,
};

#[derive(Debug, Deserialize)]
struct Params {
    engine: String,
    credentials_secret: String,
    #[serde(default)]
    database: Option<String>,
    #[serde(default)]
    port: Option<i64>,
    repair: bool,
    thorough: bool,
    timeout_seconds: i64,
}

/// What `repair_database` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // The Service in front of the database is read (its port).
    Access::new("", &["services"], &["get"]),
    // The command runs as a Job (the plan as a dry run), awaited with a watch, deleted when the
    // execution is cancelled or times out.
    Access::new("batch", &["jobs"], &["list", "watch", "create", "delete"]),
    // The Job's pod is found by its labels and its log read.
    Access::new("", &["pods"], &["list"]),
    Access::new("", &["pods/log"], &["get"]),
];

pub struct RepairDatabase {
    spec: ActionSpec,
}

impl RepairDatabase {
    pub fn new() -> Self {
        RepairDatabase {
            spec: ActionSpec {
                name: "repair_database",
                description: "Run the engine's consistency checks (pg_amcheck, mysqlcheck) against the database behind \
                              a Service in a Job with credentials from a Secret, and with repair also its repair \
                              (REINDEX, mysqlcheck --auto-repair); the log is the result.",
                risk: Risk::High,
                access: ACCESS,
                target_kinds: &["Service"],
                params: connection_params()
                    .into_iter()
                    .chain([
                    ParamSpec::new("repair", ParamType::Boolean, "Repair what the checks find (REINDEX, auto-repair).")
                        .default(false),
                    ParamSpec::new("thorough", ParamType::Boolean, "Slower, deeper checks (pg_amcheck --heapallindexed, mysqlcheck --extended).")
                        .default(false),
                    ParamSpec::new("timeout_seconds", ParamType::Integer, "The Job's deadline.")
                        .bounds(60, 21_600)
                        .default(1800),
                    ])
                    .collect(),
            },
        }
    }
}

/// The command for `engine` against `host:port`; credentials come from the environment.
fn command(p: &Params, host: &str, port: i64) -> Result<Vec<String>, ActionError> {
    let database = p
        .database
        .as_deref()
        .filter(|d| !d.trim().is_empty())
        .map(|d| name("database", d))
        .transpose()?;
    let mut cmd: Vec<String> = Vec::new();
    match p.engine.as_str() {
        "postgres" => {
            // PGUSER / PGPASSWORD come from the Secret; sh only expands them.
            let mut check = format!(
                "export PGHOST={host} PGPORT={port} PGUSER=\"$DB_USERNAME\" PGPASSWORD=\"$DB_PASSWORD\"; pg_amcheck --verbose --progress"
            );
            if p.thorough {
                check.push_str(" --heapallindexed");
            }
            match &database {
                Some(d) => check.push_str(&format!(" --database={d}")),
                None => check.push_str(" --all"),
            }
            if p.repair {
                let target = database.clone().unwrap_or_else(|| "postgres".into());
                check.push_str(&format!(
                    "; status=$?; psql --dbname={target} --command='REINDEX DATABASE {target}' && exit $status"
                ));
            }
            cmd.extend(["sh".into(), "-c".into(), check]);
        }
        _ => {
            cmd.extend([
                "sh".into(),
                "-c".into(),
                format!(
                    "mysqlcheck --host={host} --port={port} --user=\"$DB_USERNAME\" --password=\"$DB_PASSWORD\" {} {} {}",
                    if p.repair { "--auto-repair --check" } else { "--check" },
                    if p.thorough { "--extended" } else { "--medium-check" },
                    database
                        .as_ref()
                        .map(|d| format!("--databases {d}"))
                        .unwrap_or_else(|| "--all-databases".into())
                ),
            ]);
        }
    }
    Ok(cmd)
}

impl RepairDatabase {
    async fn job(ctx: &ActionContext, p: &Params) -> Result<JobRun, ActionError> {
        DbJob {
            verb: "repair",
            engine: &p.engine,
            credentials_secret: &p.credentials_secret,
            port: p.port,
            deadline_seconds: p.timeout_seconds,
        }
        .job(ctx, |host, port| command(p, host, port))
        .await
    }
}

#[async_trait]
impl Remediation for RepairDatabase {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn validate(&self, params: &serde_json::Map<String, Value>) -> Result<(), ActionError> {
        check_names(params)?;
        Ok(())
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let p: Params = ctx.params()?;
        let job = Self::job(ctx, &p).await?;
        let summary = format!(
            "{}: {} {} checks{} in a Job",
            ctx.target.object_ref(),
            p.engine,
            if p.thorough { "thorough" } else { "standard" },
            if p.repair { " and repair" } else { "" }
        );
        let change = job.plan(ctx, summary.clone()).await?;
        Ok(Plan {
            summary,
            changes: vec![change],
            warnings: if p.repair {
                vec!["repair rewrites indexes or tables and holds locks while it runs".into()]
            } else {
                Vec::new()
            },
        })
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let p: Params = ctx.params()?;
        let job = Self::job(ctx, &p).await?;
        let (name, log) = job.run(ctx).await?;
        Ok(Outcome {
            message: format!(
                "{}: {} checks passed (job {name}){}",
                ctx.target.object_ref(),
                p.engine,
                if p.repair { ", repair run" } else { "" }
            ),
            result: job_run::result(
                &name,
                &log,
                json!({ "engine": p.engine, "repair": p.repair }),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_carry_syntax_and_commands_take_credentials_from_the_environment() {
        assert!(name("database", "orders").is_ok());
        assert!(name("database", "orders; DROP TABLE x").is_err());
        assert!(name("database", "$(id)").is_err());
        let p = Params {
            engine: "postgres".into(),
            credentials_secret: "db-admin".into(),
            database: Some("orders".into()),
            port: None,
            repair: false,
            thorough: true,
            timeout_seconds: 600,
        };
        let cmd = command(&p, "db.production.svc", 5432).unwrap();
        assert_eq!(cmd[..2], ["sh".to_string(), "-c".to_string()]);
        assert!(
            cmd[2].contains("pg_amcheck")
                && cmd[2].contains("--heapallindexed")
                && cmd[2].contains("--database=orders")
        );
        assert!(cmd[2].contains("\"$DB_PASSWORD\""));
        assert_eq!(
            crate::actions::db_job::secret_env("db-admin")[1]["valueFrom"]["secretKeyRef"]["name"],
            "db-admin"
        );
    }
}
