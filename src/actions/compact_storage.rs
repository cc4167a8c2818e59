//! `compact_storage`: fragmentation (bloat) in a database behind a Service. A Job runs the
//! engine's own compaction against it — PostgreSQL's `vacuumdb --analyze` (with `full`,
//! `VACUUM FULL`, which rewrites tables and locks each while it runs) or MySQL's
//! `mysqlcheck --optimize` (`OPTIMIZE TABLE`) — with the credentials taken by the Job from a
//! Secret the caller names (the executor never reads them). The Job's log is the result;
//! compaction changes no data, only its layout, so there is nothing to roll back.

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
    full: bool,
    timeout_seconds: i64,
}

/// What `compact_storage` calls in the cluster (see [`ActionSpec::access`]).
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

pub struct CompactStorage {
    spec: ActionSpec,
}

impl CompactStorage {
    pub fn new() -> Self {
        CompactStorage {
            spec: ActionSpec {
                name: "compact_storage",
                description: "Compact a database behind a Service (fragmentation): vacuumdb --analyze (full: VACUUM \
                              FULL) or mysqlcheck --optimize in a Job with credentials from a Secret; the log is the \
                              result.",
                risk: Risk::Medium,
                access: ACCESS,
                target_kinds: &["Service"],
                params: connection_params()
                    .into_iter()
                    .chain([
                    ParamSpec::new(
                        "full",
                        ParamType::Boolean,
                        "PostgreSQL: VACUUM FULL, which gives space back to the filesystem but locks each table while it is rewritten.",
                    )
                    .default(false),
                    ParamSpec::new("timeout_seconds", ParamType::Integer, "The Job's deadline.")
                        .bounds(60, 21_600)
                        .default(3600),
                    ])
                    .collect(),
            },
        }
    }
}

/// The command for the engine against `host:port`; credentials come from the environment.
fn command(p: &Params, host: &str, port: i64) -> Result<Vec<String>, ActionError> {
    let database = p
        .database
        .as_deref()
        .filter(|d| !d.trim().is_empty())
        .map(|d| name("database", d))
        .transpose()?;
    let script = match p.engine.as_str() {
        "postgres" => format!(
            "export PGHOST={host} PGPORT={port} PGUSER=\"$DB_USERNAME\" PGPASSWORD=\"$DB_PASSWORD\"; \
             vacuumdb --verbose --analyze{} {}",
            if p.full { " --full" } else { "" },
            database
                .as_ref()
                .map(|d| format!("--dbname={d}"))
                .unwrap_or_else(|| "--all".into())
        ),
        _ => format!(
            "mysqlcheck --host={host} --port={port} --user=\"$DB_USERNAME\" --password=\"$DB_PASSWORD\" --optimize --verbose {}",
            database
                .as_ref()
                .map(|d| format!("--databases {d}"))
                .unwrap_or_else(|| "--all-databases".into())
        ),
    };
    Ok(vec!["sh".into(), "-c".into(), script])
}

impl CompactStorage {
    async fn job(ctx: &ActionContext, p: &Params) -> Result<JobRun, ActionError> {
        DbJob {
            verb: "compact",
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
impl Remediation for CompactStorage {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn validate(&self, params: &serde_json::Map<String, Value>) -> Result<(), ActionError> {
        check_names(params)?;
        if params.get("full") == Some(&Value::Bool(true))
            && params.get("engine").and_then(Value::as_str) == Some("mysql")
        {
            return Err(ActionError::invalid(
                "full",
                "is PostgreSQL's VACUUM FULL; MySQL's OPTIMIZE TABLE always rebuilds",
            ));
        }
        Ok(())
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let p: Params = ctx.params()?;
        let job = Self::job(ctx, &p).await?;
        let summary = format!(
            "{}: {} compaction{} in a Job",
            ctx.target.object_ref(),
            p.engine,
            if p.full { " (VACUUM FULL)" } else { "" }
        );
        let change = job.plan(ctx, summary.clone()).await?;
        let mut warnings =
            vec!["compaction reads and rewrites a lot: expect I/O load while it runs".into()];
        if p.full || p.engine == "mysql" {
            warnings.push("each table is locked while it is rewritten".into());
        }
        Ok(Plan {
            summary,
            changes: vec![change],
            warnings,
        })
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let p: Params = ctx.params()?;
        let job = Self::job(ctx, &p).await?;
        let (name, log) = job.run(ctx).await?;
        Ok(Outcome {
            message: format!(
                "{}: {} compaction done (job {name})",
                ctx.target.object_ref(),
                p.engine
            ),
            result: job_run::result(&name, &log, json!({ "engine": p.engine, "full": p.full })),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_compacts_one_database_or_all_with_credentials_from_the_environment() {
        let mut p = Params {
            engine: "postgres".into(),
            credentials_secret: "db-admin".into(),
            database: Some("orders".into()),
            port: None,
            full: true,
            timeout_seconds: 600,
        };
        let cmd = command(&p, "db.production.svc", 5432).unwrap();
        assert!(
            cmd[2].contains("vacuumdb --verbose --analyze --full --dbname=orders"),
            "{cmd:?}"
        );
        assert!(cmd[2].contains("PGPASSWORD=\"$DB_PASSWORD\""));
        p.engine = "mysql".into();
        p.database = None;
        let cmd = command(&p, "db.production.svc", 3306).unwrap();
        assert!(
            cmd[2].contains("--optimize") && cmd[2].contains("--all-databases"),
            "{cmd:?}"
        );
        p.database = Some("x; rm -rf /".into());
        assert!(command(&p, "h", 1).is_err());
    }
}
