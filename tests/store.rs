//! The store's contract, one suite run against every backend: in memory, a SQLite file and a
//! real PostgreSQL server. Plus what only a file can show: the history survives the process
//! (dropped, or killed with SIGKILL mid-stream).
//!
//! PostgreSQL: the tests use `EXECUTOR_TEST_POSTGRES_URL`, else the URL that
//! `scripts/start-postgres` wrote to `target/pg/url`. Outside CI they run that script
//! themselves (it installs and starts a private server, and is fast once it is up); under CI
//! they fail, naming the script, when no server was started. Each test works in a schema of its
//! own, so they run in parallel.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use executor_service::domain::Target;
use executor_service::domain::{AlertContext, Event, ExecutionState, ExecutionView, ListFilter};
use executor_service::store::{self, NewExecution, Store, StoreError};
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// Builders

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_760_000_000 + secs, 0).unwrap()
}

/// A view with every field set, as the engine records it.
fn mk_view(id: &str, created_at: DateTime<Utc>, state: ExecutionState) -> ExecutionView {
    let terminal = state.is_terminal();
    ExecutionView {
        id: id.to_string(),
        action: "scale_deployment".into(),
        target: Target {
            cluster: "prod-eu".into(),
            namespace: "shop".into(),
            kind: "Deployment".into(),
            name: "checkout".into(),
        },
        parameters: json!({"replicas": 5, "ratio": 0.25, "note": "ünïcode \u{0} nul"})
            .as_object()
            .cloned()
            .unwrap(),
        request_id: String::new(),
        alert: Some(AlertContext {
            name: "HighLatency".into(),
            severity: "critical".into(),
            labels: [("team".to_string(), "payments".to_string())].into(),
            annotations: [("runbook".to_string(), "https://x/rb".to_string())].into(),
        }),
        timeout: Duration::from_millis(120_500),
        state,
        message: format!("{} it went", state.as_str()),
        created_at,
        started_at: Some(created_at + chrono::Duration::seconds(1)),
        finished_at: terminal.then(|| created_at + chrono::Duration::seconds(30)),
        result: json!({"before": {"replicas": 2}, "after": {"replicas": 5}}),
        rollback_data: json!({"replicas": 2}),
        last_sequence: 3,
        requester: "alice@example.com".into(),
        policy: json!({"decision": "allow", "reasons": ["small change"]}),
        approval: json!({"by": "bob", "at": "2025-10-09T10:00:00Z", "why": "ok"}),
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        recommendation: Some(executor_service::domain::Recommendation {
            incident_id: "INC-7".into(),
            confidence: Some(0.87),
            reasoning: "CPU above 90% for 10 minutes".into(),
            source: "decision-engine".into(),
        }),
    }
}

fn mk_event(sequence: u64, message: &str) -> Event {
    Event {
        sequence,
        timestamp: at(sequence as i64),
        state: ExecutionState::Running,
        message: message.to_string(),
        progress: Some((sequence, 5)),
        details: json!({"step": sequence}),
        encoded: Default::default(),
    }
}

fn mk_events(range: std::ops::RangeInclusive<u64>) -> Vec<Event> {
    range.map(|s| mk_event(s, &format!("step {s}"))).collect()
}

fn ids(views: &[ExecutionView]) -> Vec<String> {
    views.iter().map(|v| v.id.clone()).collect()
}

/// Every page of `filter`, following tokens; fails on a loop.
async fn all_pages(store: &dyn Store, mut filter: ListFilter) -> Vec<Vec<ExecutionView>> {
    let mut pages = Vec::new();
    loop {
        let (page, next) = store.list(&filter).await.expect("list");
        pages.push(page);
        if next.is_empty() {
            return pages;
        }
        assert!(pages.len() < 1000, "paging does not end");
        filter.page_token = next;
    }
}

/// Newest first: `created_at` descending, then id descending.
fn newest_first(views: &mut [ExecutionView]) {
    views.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
}

// ---------------------------------------------------------------------------------------------
// The suite: each takes a fresh, empty store.

mod suite {
    use super::*;

    pub async fn an_execution_round_trips_with_every_field(store: Arc<dyn Store>) {
        let mut view = mk_view(
            "e1",
            at(0) + chrono::Duration::nanoseconds(123_456_789),
            ExecutionState::Queued,
        );
        view.request_id = "req-1".into();
        store.insert(&view, "fp-1").await.unwrap();
        assert_eq!(store.get("e1").await.unwrap(), Some(view.clone()));
        assert_eq!(
            store.find_request("req-1").await.unwrap(),
            Some((view.clone(), "fp-1".to_string()))
        );

        view.state = ExecutionState::Succeeded;
        view.finished_at = Some(at(60));
        view.result = json!({"verified": true});
        view.message = "done".into();
        store.update(&view).await.unwrap();
        assert_eq!(store.get("e1").await.unwrap(), Some(view.clone()));
        assert_eq!(
            store.find_request("req-1").await.unwrap(),
            Some((view, "fp-1".to_string()))
        );
    }

    pub async fn unknown_ids_and_empty_request_ids_find_nothing(store: Arc<dyn Store>) {
        assert_eq!(store.get("nope").await.unwrap(), None);
        assert_eq!(store.find_request("nope").await.unwrap(), None);
        // Executions without a request id never collide, and "" finds none of them.
        store
            .insert(&mk_view("a", at(0), ExecutionState::Queued), "fp")
            .await
            .unwrap();
        store
            .insert(&mk_view("b", at(1), ExecutionState::Queued), "fp")
            .await
            .unwrap();
        assert_eq!(store.find_request("").await.unwrap(), None);
        assert!(store.events("nope", 0).await.unwrap().is_empty());
        let err = store
            .update(&mk_view("nope", at(0), ExecutionState::Failed))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    }

    pub async fn inserting_an_existing_id_is_refused(store: Arc<dyn Store>) {
        let view = mk_view("same", at(0), ExecutionState::Queued);
        store.insert(&view, "fp").await.unwrap();
        let err = store.insert(&view, "fp").await.unwrap_err();
        assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    }

    pub async fn a_round_with_a_taken_request_id_refuses_that_insert_alone(store: Arc<dyn Store>) {
        let mut winner = mk_view("first", at(0), ExecutionState::Queued);
        winner.request_id = "req-x".into();
        store.insert(&winner, "fp-1").await.unwrap();
        let mut loser = mk_view("second", at(1), ExecutionState::Queued);
        loser.request_id = "req-x".into();
        let other = mk_view("other", at(2), ExecutionState::Queued);
        let mut updated = winner.clone();
        updated.state = ExecutionState::Running;
        let inserts = [
            NewExecution {
                view: loser,
                fingerprint: "fp-2".into(),
                events: mk_events(1..=1),
            },
            NewExecution {
                view: other.clone(),
                fingerprint: "fp-3".into(),
                events: mk_events(1..=1),
            },
        ];
        let outcomes = store
            .write(
                &inserts,
                &[("other".to_string(), mk_events(2..=3))],
                &[updated.clone()],
            )
            .await
            .unwrap();
        assert_eq!(outcomes.len(), 2);
        match &outcomes[0] {
            Err(StoreError::DuplicateRequest {
                request_id,
                existing,
            }) => assert_eq!((request_id.as_str(), existing.as_str()), ("req-x", "first")),
            other => panic!("expected DuplicateRequest, got {other:?}"),
        }
        assert!(outcomes[1].is_ok(), "{:?}", outcomes[1]);
        // The rest of the round is stored, first events with their execution; the refused
        // execution and its events are not.
        assert_eq!(store.get("second").await.unwrap(), None);
        assert!(store.events("second", 0).await.unwrap().is_empty());
        assert_eq!(store.get("other").await.unwrap(), Some(other));
        assert_eq!(store.events("other", 0).await.unwrap(), mk_events(1..=3));
        assert_eq!(store.get("first").await.unwrap(), Some(updated));
        assert_eq!(
            store
                .find_request("req-x")
                .await
                .unwrap()
                .map(|(v, fp)| (v.id, fp)),
            Some(("first".to_string(), "fp-1".to_string()))
        );
    }

    pub async fn events_come_back_in_order_and_duplicates_are_ignored(store: Arc<dyn Store>) {
        store
            .insert(&mk_view("e1", at(0), ExecutionState::Running), "fp")
            .await
            .unwrap();
        store
            .insert(&mk_view("e2", at(1), ExecutionState::Running), "fp")
            .await
            .unwrap();
        store.append_events("e1", &mk_events(1..=3)).await.unwrap();
        store.append_events("e2", &mk_events(1..=2)).await.unwrap();
        // A retried write: 3 again (with other content, which must not replace the first), then
        // 4 and 5.
        let mut retry = vec![mk_event(3, "rewritten")];
        retry.extend(mk_events(4..=5));
        store.append_events("e1", &retry).await.unwrap();
        store.append_events("e1", &[]).await.unwrap();

        assert_eq!(store.events("e1", 0).await.unwrap(), mk_events(1..=5));
        assert_eq!(store.events("e1", 3).await.unwrap(), mk_events(4..=5));
        assert!(store.events("e1", 5).await.unwrap().is_empty());
        assert!(store.events("e1", u64::MAX).await.unwrap().is_empty());
        assert_eq!(store.events("e2", 0).await.unwrap(), mk_events(1..=2));
    }

    pub async fn twenty_concurrent_inserts_with_one_request_id_create_one_execution(
        store: Arc<dyn Store>,
    ) {
        let start = Arc::new(tokio::sync::Barrier::new(20));
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let store = store.clone();
                let start = start.clone();
                tokio::spawn(async move {
                    let mut view = mk_view(&format!("c{i:02}"), at(i), ExecutionState::Queued);
                    view.request_id = "shared-request".into();
                    start.wait().await;
                    (view.id.clone(), store.insert(&view, "fp").await)
                })
            })
            .collect();
        let mut winners = Vec::new();
        let mut losers = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                (id, Ok(())) => winners.push(id),
                (
                    _,
                    Err(StoreError::DuplicateRequest {
                        request_id,
                        existing,
                    }),
                ) => {
                    assert_eq!(request_id, "shared-request");
                    losers.push(existing);
                }
                (id, Err(e)) => panic!("insert {id}: unexpected {e:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "winners: {winners:?}");
        assert_eq!(losers.len(), 19);
        assert!(losers.iter().all(|l| *l == winners[0]), "{losers:?}");
        let (found, fp) = store.find_request("shared-request").await.unwrap().unwrap();
        assert_eq!((found.id, fp), (winners[0].clone(), "fp".to_string()));
        let (all, _) = store
            .list(&ListFilter {
                page_size: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(ids(&all), vec![winners[0].clone()]);
    }

    /// 36 executions over 3 states × 2 actions × 2 namespaces × 3 requesters, every fourth
    /// sharing its creation time with the previous one (so ids break ties).
    fn mk_population() -> Vec<ExecutionView> {
        let states = [
            ExecutionState::Succeeded,
            ExecutionState::Failed,
            ExecutionState::Running,
        ];
        (0..36)
            .map(|i: i64| {
                let created = at(i - i64::from(i % 4 == 3));
                let mut v = mk_view(&format!("x{i:03}"), created, states[(i % 3) as usize]);
                v.action = ["scale_deployment", "restart_pod"][(i % 2) as usize].into();
                v.target.namespace = ["shop", "search"][(i / 2 % 2) as usize].into();
                v.requester = ["alice", "bob", "carol"][(i / 3 % 3) as usize].into();
                v
            })
            .collect()
    }

    async fn insert_all(store: &dyn Store, views: &[ExecutionView]) {
        for v in views {
            store.insert(v, "fp").await.unwrap();
        }
    }

    /// Which executions a filter should return.
    type Keep = Box<dyn Fn(&ExecutionView) -> bool>;

    pub async fn list_filters_by_state_action_namespace_and_requester(store: Arc<dyn Store>) {
        let population = mk_population();
        insert_all(&*store, &population).await;
        let filters: Vec<(ListFilter, Keep)> = vec![
            (ListFilter::default(), Box::new(|_| true)),
            (
                ListFilter {
                    state: Some(ExecutionState::Failed),
                    ..Default::default()
                },
                Box::new(|v| v.state == ExecutionState::Failed),
            ),
            (
                ListFilter {
                    action: Some("restart_pod".into()),
                    ..Default::default()
                },
                Box::new(|v| v.action == "restart_pod"),
            ),
            (
                ListFilter {
                    namespace: Some("search".into()),
                    ..Default::default()
                },
                Box::new(|v| v.target.namespace == "search"),
            ),
            (
                ListFilter {
                    requester: Some("bob".into()),
                    ..Default::default()
                },
                Box::new(|v| v.requester == "bob"),
            ),
            (
                ListFilter {
                    state: Some(ExecutionState::Running),
                    action: Some("scale_deployment".into()),
                    namespace: Some("shop".into()),
                    requester: Some("carol".into()),
                    ..Default::default()
                },
                Box::new(|v| {
                    v.state == ExecutionState::Running
                        && v.action == "scale_deployment"
                        && v.target.namespace == "shop"
                        && v.requester == "carol"
                }),
            ),
            (
                ListFilter {
                    requester: Some("nobody".into()),
                    ..Default::default()
                },
                Box::new(|_| false),
            ),
        ];
        for (filter, keep) in filters {
            let mut expected: Vec<_> = population.iter().filter(|v| keep(v)).cloned().collect();
            newest_first(&mut expected);
            let (page, next) = store.list(&filter).await.unwrap();
            assert!(next.is_empty(), "{filter:?}: one page expected");
            assert_eq!(ids(&page), ids(&expected), "{filter:?}");
            assert_eq!(page, expected, "{filter:?}: whole views");
        }
    }

    pub async fn pages_are_disjoint_newest_first_and_cover_everything(store: Arc<dyn Store>) {
        let population = mk_population();
        insert_all(&*store, &population).await;
        for filter in [
            ListFilter {
                page_size: 7,
                ..Default::default()
            },
            ListFilter {
                page_size: 1,
                state: Some(ExecutionState::Failed),
                ..Default::default()
            },
            ListFilter {
                page_size: 4,
                namespace: Some("shop".into()),
                requester: Some("alice".into()),
                ..Default::default()
            },
            // Exactly the number of matches (12): one page, no empty one after it.
            ListFilter {
                page_size: 12,
                state: Some(ExecutionState::Succeeded),
                ..Default::default()
            },
        ] {
            let pages = all_pages(&*store, filter.clone()).await;
            let size = filter.page_size;
            let (last, full) = pages.split_last().unwrap();
            assert!(full.iter().all(|p| p.len() == size), "{filter:?}");
            assert!(!last.is_empty() && last.len() <= size, "{filter:?}");
            let listed: Vec<ExecutionView> = pages.concat();
            let unique: BTreeSet<_> = listed.iter().map(|v| v.id.clone()).collect();
            assert_eq!(unique.len(), listed.len(), "{filter:?}: pages overlap");
            let mut expected: Vec<_> = population
                .iter()
                .filter(|v| {
                    filter.state.is_none_or(|s| v.state == s)
                        && filter.action.as_ref().is_none_or(|a| &v.action == a)
                        && filter
                            .namespace
                            .as_ref()
                            .is_none_or(|n| &v.target.namespace == n)
                        && filter.requester.as_ref().is_none_or(|r| &v.requester == r)
                })
                .cloned()
                .collect();
            newest_first(&mut expected);
            assert_eq!(ids(&listed), ids(&expected), "{filter:?}");
        }
    }

    pub async fn paging_is_unaffected_by_executions_created_meanwhile(store: Arc<dyn Store>) {
        let population = mk_population();
        insert_all(&*store, &population).await;
        let mut filter = ListFilter {
            page_size: 10,
            ..Default::default()
        };
        let (first, next) = store.list(&filter).await.unwrap();
        for i in 0..5 {
            store
                .insert(
                    &mk_view(&format!("new{i}"), at(1000 + i), ExecutionState::Queued),
                    "fp",
                )
                .await
                .unwrap();
        }
        filter.page_token = next;
        let rest = all_pages(&*store, filter).await.concat();
        let mut expected = population;
        newest_first(&mut expected);
        assert_eq!(ids(&[first, rest].concat()), ids(&expected));
    }

    pub async fn a_page_size_of_zero_means_the_default(store: Arc<dyn Store>) {
        let views: Vec<_> = (0..60)
            .map(|i| mk_view(&format!("d{i:02}"), at(i), ExecutionState::Succeeded))
            .collect();
        insert_all(&*store, &views).await;
        let (page, next) = store.list(&ListFilter::default()).await.unwrap();
        assert_eq!(page.len(), executor_service::engine::DEFAULT_PAGE_SIZE);
        assert_eq!(page[0].id, "d59");
        assert!(!next.is_empty());
    }

    pub async fn a_page_token_the_store_did_not_issue_is_refused(store: Arc<dyn Store>) {
        insert_all(&*store, &mk_population()).await;
        for token in ["garbage", "djE6MTIzOg", "\u{0}", "v1:1.000000000:x"] {
            let err = store
                .list(&ListFilter {
                    page_token: token.to_string(),
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert!(
                matches!(err, StoreError::BadPageToken),
                "{token:?}: {err:?}"
            );
        }
    }

    pub async fn unfinished_lists_exactly_the_executions_not_in_a_terminal_state(
        store: Arc<dyn Store>,
    ) {
        let states = [
            ExecutionState::Queued,
            ExecutionState::Running,
            ExecutionState::Succeeded,
            ExecutionState::Failed,
            ExecutionState::Cancelled,
            ExecutionState::TimedOut,
            ExecutionState::WaitingApproval,
            ExecutionState::RollingBack,
            ExecutionState::RolledBack,
            ExecutionState::Interrupted,
            ExecutionState::Rejected,
        ];
        for (i, state) in states.iter().enumerate() {
            store
                .insert(&mk_view(state.as_str(), at(i as i64), *state), "fp")
                .await
                .unwrap();
        }
        let unfinished: BTreeSet<String> = ids(&store.unfinished().await.unwrap())
            .into_iter()
            .collect();
        let expected: BTreeSet<String> = states
            .iter()
            .filter(|s| !s.is_terminal())
            .map(|s| s.as_str().to_string())
            .collect();
        assert_eq!(unfinished, expected);
        assert_eq!(expected.len(), 4);
    }

    pub async fn prune_by_age_deletes_old_terminal_executions_and_their_events(
        store: Arc<dyn Store>,
    ) {
        let now = at(10 * 86_400);
        let mut old_done = mk_view("old-done", at(0), ExecutionState::Succeeded);
        old_done.request_id = "req-old".into();
        let old_running = mk_view("old-running", at(1), ExecutionState::Running);
        let mut recent_done = mk_view("recent-done", now, ExecutionState::Failed);
        recent_done.finished_at = Some(now);
        // Created long ago but finished recently: its age counts from the end.
        let mut long_done = mk_view("long-done", at(2), ExecutionState::Cancelled);
        long_done.finished_at = Some(now);
        for v in [&old_done, &old_running, &recent_done, &long_done] {
            store.insert(v, "fp").await.unwrap();
            store.append_events(&v.id, &mk_events(1..=3)).await.unwrap();
        }
        let cutoff = now - chrono::Duration::days(1);
        assert_eq!(store.prune(cutoff, usize::MAX).await.unwrap(), 1);
        assert_eq!(store.get("old-done").await.unwrap(), None);
        assert!(store.events("old-done", 0).await.unwrap().is_empty());
        assert_eq!(store.find_request("req-old").await.unwrap(), None);
        for kept in ["old-running", "recent-done", "long-done"] {
            assert!(store.get(kept).await.unwrap().is_some(), "{kept}");
            assert_eq!(store.events(kept, 0).await.unwrap().len(), 3, "{kept}");
        }
        // The request id is free again once its execution is gone.
        let mut again = mk_view("again", now, ExecutionState::Queued);
        again.request_id = "req-old".into();
        store.insert(&again, "fp2").await.unwrap();
        // Nothing more to prune.
        assert_eq!(store.prune(cutoff, usize::MAX).await.unwrap(), 0);
    }

    pub async fn prune_by_count_keeps_the_newest_terminal_executions(store: Arc<dyn Store>) {
        let mut views = Vec::new();
        for i in 0..10 {
            // Two share a creation time: ids break the tie, as in listing.
            let created = at(if i == 6 { 5 } else { i });
            views.push(mk_view(
                &format!("t{i}"),
                created,
                ExecutionState::Succeeded,
            ));
        }
        views.push(mk_view("r-old", at(-5), ExecutionState::Running));
        views.push(mk_view("q-new", at(50), ExecutionState::Queued));
        for v in &views {
            store.insert(v, "fp").await.unwrap();
            store.append_events(&v.id, &mk_events(1..=2)).await.unwrap();
        }
        assert_eq!(store.prune(at(-1000), 3).await.unwrap(), 7);
        let (left, _) = store.list(&ListFilter::default()).await.unwrap();
        // Newest terminal: t9 (9), t8 (8), t7 (7); t6 sits at 5 with t5, below them.
        assert_eq!(ids(&left), ["q-new", "t9", "t8", "t7", "r-old"]);
        for gone in ["t0", "t5", "t6"] {
            assert!(store.events(gone, 0).await.unwrap().is_empty(), "{gone}");
        }
        assert_eq!(store.events("t9", 0).await.unwrap().len(), 2);
        assert_eq!(store.prune(at(-1000), 3).await.unwrap(), 0);
        assert_eq!(store.prune(at(-1000), 0).await.unwrap(), 3);
        assert_eq!(ids(&store.unfinished().await.unwrap()), ["r-old", "q-new"]);
    }
}

// ---------------------------------------------------------------------------------------------
// Backends

/// A fresh, empty store and what must outlive it.
struct Fixture {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
    pg_schema: Option<(String, String)>,
}

impl Fixture {
    async fn memory() -> Fixture {
        Fixture {
            store: store::open("memory:").await.unwrap(),
            _dir: None,
            pg_schema: None,
        }
    }

    async fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        Fixture {
            store: store::open(path.to_str().unwrap()).await.unwrap(),
            _dir: Some(dir),
            pg_schema: None,
        }
    }

    /// A schema of its own on the test server, so that tests do not see each other's rows.
    async fn postgres() -> Fixture {
        static N: AtomicU32 = AtomicU32::new(0);
        let url = postgres_url();
        let schema = format!(
            "t_{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            Utc::now().timestamp_micros()
        );
        admin(&url, &format!("CREATE SCHEMA {schema}")).await;
        let sep = if url.contains('?') { '&' } else { '?' };
        let scoped = format!("{url}{sep}options=-c%20search_path%3D{schema}");
        let store = store::open(&scoped).await.unwrap_or_else(|e| {
            panic!("open the PostgreSQL store at {url}: {e} (run scripts/start-postgres)")
        });
        Fixture {
            store,
            _dir: None,
            pg_schema: Some((url, schema)),
        }
    }

    async fn finish(self) {
        if let Some((url, schema)) = &self.pg_schema {
            drop(self.store);
            admin(url, &format!("DROP SCHEMA {schema} CASCADE")).await;
        }
    }
}

async fn admin(url: &str, sql: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap_or_else(|e| {
        panic!("cannot reach PostgreSQL at {url}: {e}; run scripts/start-postgres")
    });
    sqlx::query(sql).execute(&mut conn).await.unwrap();
    let _ = conn.close().await;
}

use common::postgres_url;

/// The whole suite, once per backend.
macro_rules! conformance {
    ($backend:ident: $($test:ident),* $(,)?) => {
        mod $backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    let fixture = Fixture::$backend().await;
                    suite::$test(fixture.store.clone()).await;
                    fixture.finish().await;
                }
            )*
        }
    };
}

macro_rules! suite_on {
    ($($backend:ident),*) => {
        $(
            conformance!($backend:
                an_execution_round_trips_with_every_field,
                unknown_ids_and_empty_request_ids_find_nothing,
                inserting_an_existing_id_is_refused,
                a_round_with_a_taken_request_id_refuses_that_insert_alone,
                events_come_back_in_order_and_duplicates_are_ignored,
                twenty_concurrent_inserts_with_one_request_id_create_one_execution,
                list_filters_by_state_action_namespace_and_requester,
                pages_are_disjoint_newest_first_and_cover_everything,
                paging_is_unaffected_by_executions_created_meanwhile,
                a_page_size_of_zero_means_the_default,
                a_page_token_the_store_did_not_issue_is_refused,
                unfinished_lists_exactly_the_executions_not_in_a_terminal_state,
                prune_by_age_deletes_old_terminal_executions_and_their_events,
                prune_by_count_keeps_the_newest_terminal_executions,
            );
        )*
    };
}

suite_on!(memory, sqlite, postgres);

// ---------------------------------------------------------------------------------------------
// What only a file shows, and opening by URL.

/// Writes a known history: executions `k0..k{n}`, each with 5 events, half of them finished.
async fn write_history(store: &dyn Store, n: i64) {
    for i in 0..n {
        let mut v = mk_view(&format!("k{i}"), at(i), ExecutionState::Running);
        v.request_id = format!("req-k{i}");
        store.insert(&v, "fp").await.unwrap();
        store.append_events(&v.id, &mk_events(1..=5)).await.unwrap();
        if i % 2 == 0 {
            v.state = ExecutionState::Succeeded;
            v.finished_at = Some(at(i + 1));
            store.update(&v).await.unwrap();
        }
    }
}

async fn assert_history(store: &dyn Store, n: i64) {
    for i in 0..n {
        let v = store
            .get(&format!("k{i}"))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("k{i} lost"));
        let expected = if i % 2 == 0 {
            ExecutionState::Succeeded
        } else {
            ExecutionState::Running
        };
        assert_eq!(v.state, expected, "k{i}");
        assert_eq!(
            store.events(&v.id, 0).await.unwrap(),
            mk_events(1..=5),
            "k{i}"
        );
        let (found, _) = store
            .find_request(&format!("req-k{i}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.id, v.id);
    }
    assert_eq!(store.unfinished().await.unwrap().len() as i64, n / 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_history_is_all_there_after_the_store_is_dropped_and_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("h.db").display());
    let first = store::open(&url).await.unwrap();
    write_history(&*first, 20).await;
    drop(first);
    let again = store::open(&url).await.unwrap();
    assert_history(&*again, 20).await;
}

/// Env var naming the database the child writer fills before it is killed.
const CHILD_DB: &str = "EXECUTOR_STORE_TEST_CHILD_DB";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_history_survives_sigkill_of_the_writing_process() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("killed.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sqlite_child_writer",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB, &db)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let committed = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("HISTORY WRITTEN"));
    assert!(committed, "the child writer did not report its history");
    child.kill().unwrap(); // SIGKILL: no destructor, no pool close, no checkpoint.
    child.wait().unwrap();
    let reopened = store::open(db.to_str().unwrap()).await.unwrap();
    assert_history(&*reopened, 20).await;
}

/// Not a test of its own: the process [`a_sqlite_history_survives_sigkill_of_the_writing_process`]
/// kills. Writes the history, says so, and waits to be killed with the store open.
#[tokio::test]
#[ignore = "child process of a_sqlite_history_survives_sigkill_of_the_writing_process"]
async fn sqlite_child_writer() {
    let Some(db) = std::env::var_os(CHILD_DB) else {
        return;
    };
    let store = store::open(db.to_str().unwrap()).await.unwrap();
    write_history(&*store, 20).await;
    println!("HISTORY WRITTEN");
    tokio::time::sleep(Duration::from_secs(60)).await;
    drop(store);
}

#[tokio::test]
async fn open_takes_paths_sqlite_urls_and_memory_and_refuses_other_schemes() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b/c/history.db");
    let s = store::open(&format!("sqlite://{}", nested.display()))
        .await
        .unwrap();
    s.insert(&mk_view("x", at(0), ExecutionState::Queued), "fp")
        .await
        .unwrap();
    assert!(nested.exists());
    let plain = dir.path().join("plain.db");
    store::open(plain.to_str().unwrap()).await.unwrap();
    assert!(plain.exists());
    let m = store::open("memory:").await.unwrap();
    assert_eq!(m.get("x").await.unwrap(), None);
    for bad in ["mysql://u@h/db", "", "sqlite://", "http://x"] {
        let err = match store::open(bad).await {
            Ok(_) => panic!("{bad:?} opened"),
            Err(e) => e,
        };
        assert!(matches!(err, StoreError::Backend(_)), "{bad:?}: {err:?}");
    }
}

/// The test server's TLS material from `scripts/start-postgres`.
fn tls_file(name: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/pg/tls")
        .join(name)
        .display()
        .to_string()
}

#[tokio::test]
async fn postgres_over_tls_verifies_the_server_against_the_ca_file_and_refuses_another_ca() {
    let base = postgres_url();
    let verified = format!(
        "{base}?sslmode=verify-full&sslrootcert={}",
        tls_file("ca.crt")
    );
    // The store opens over TLS, and the server says the session is encrypted.
    store::open(&verified)
        .await
        .expect("open over verified TLS");
    let pool = sqlx::PgPool::connect(&verified).await.unwrap();
    let (ssl, version): (bool, String) =
        sqlx::query_as("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(ssl, "not encrypted");
    assert!(version.starts_with("TLS"), "{version}");
    pool.close().await;
    // A CA that did not sign the server's certificate: refused, saying why.
    let impostor = format!(
        "{base}?sslmode=verify-full&sslrootcert={}",
        tls_file("other-ca.crt")
    );
    let err = match store::open(&impostor).await {
        Ok(_) => panic!("a server signed by another CA was trusted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("certificate") || err.contains("Certificate"),
        "{err}"
    );
}

/// The coordination of replicas at the store's level (PostgreSQL): a replica whose lease was
/// taken over cannot, by a late terminal write, release what the new owner holds.
#[tokio::test]
async fn a_fenced_terminal_write_neither_lands_nor_releases_the_new_owners_claims() {
    use executor_service::store::{Change, Claimed, Enqueued, FenceToken, NewExecution, RunSpec};
    let database = common::fresh_postgres_database().await;
    let store = store::open(&database).await.unwrap();
    let coordination = store
        .coordination()
        .expect("PostgreSQL coordinates replicas");
    let view = mk_view("x", Utc::now(), ExecutionState::Queued);
    let key = "sim|default/deployment/web".to_string();
    let spec = RunSpec {
        keys: vec![key.clone()],
        cooldown: Duration::from_secs(60),
        rollback_on_failure: true,
        priority: 0,
    };
    let new = NewExecution {
        view: view.clone(),
        fingerprint: "f".into(),
        events: mk_events(1..=1),
    };
    assert!(matches!(
        coordination.enqueue(&new, &spec, 10).await.unwrap(),
        Enqueued::Stored
    ));
    let lease = Duration::from_secs(60);
    let Claimed { fence: first, .. } = coordination
        .claim("replica-a", lease, 0)
        .await
        .unwrap()
        .expect("A claims it");
    // A is presumed gone: the execution goes back to the queue, and B claims it.
    coordination
        .transition("x", &|_| Some(Change::Requeue))
        .await
        .unwrap();
    let Claimed { fence: second, .. } = coordination
        .claim("replica-b", lease, 0)
        .await
        .unwrap()
        .expect("B claims it");
    assert!(second > first);
    // A's late write: its FAILED end, under its old token.
    let mut ended = view.clone();
    ended.state = ExecutionState::Failed;
    ended.finished_at = Some(Utc::now());
    ended.started_at = Some(Utc::now());
    let (_, fenced) = store
        .write_fenced(
            &[],
            &[("x".to_string(), vec![mk_event(2, "late")])],
            &[ended],
            &[FenceToken {
                execution_id: "x".into(),
                owner: "replica-a".into(),
                fence: first,
            }],
        )
        .await
        .unwrap();
    assert_eq!(fenced, ["x"]);
    // Nothing of it landed, and B still holds the object and the execution.
    assert_eq!(
        store.get("x").await.unwrap().unwrap().state,
        ExecutionState::Queued
    );
    assert_eq!(store.events("x", 0).await.unwrap().len(), 1);
    let pool = sqlx::PgPool::connect(&database).await.unwrap();
    let (owner, held): (Option<String>, i64) = sqlx::query_as(
        "SELECT owner, (SELECT count(*) FROM object_locks WHERE execution_id = 'x') \
         FROM executions WHERE id = 'x'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((owner.as_deref(), held), (Some("replica-b"), 1));
    let cooldown: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT until FROM cooldowns WHERE execution_id = 'x'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        cooldown, None,
        "the cooldown started from a write that was refused"
    );
    pool.close().await;
}
