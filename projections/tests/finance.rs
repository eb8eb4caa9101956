//! The ledger, reconciliation, audit replay/diff and blue/green rebuild, against real
//! nats-server and Postgres.

mod common;

use common::*;
use projections::ledger;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn the_ledger_reconciles_with_the_log_and_tampering_is_caught_by_reconcile_and_diff() {
    let env = env().await;
    let shutdown = CancellationToken::new();
    start_projectors(&env, &shutdown);
    for id in 1..=9 {
        order_story(
            &env.bus,
            id,
            100 + id % 3,
            1 + id % 2,
            10 + (id % 3) * 10,
            1 + id % 7,
        )
        .await;
    }
    wait_for_balance(&env.bus, 1, 500).await;
    wait_for_balance(&env.bus, 2, 500).await;
    withdraw(&env.bus, 1, 1, 300, "transfer").await;
    withdraw(&env.bus, 2, 2, 200, "reject").await;
    withdraw(&env.bus, 2, 3, 100, "pending").await;

    let report = reconcile_until_ok(&env, "public").await;
    assert_eq!(report.matched.get("payments"), Some(&9));
    assert_eq!(report.matched.get("sessions"), Some(&9));
    assert_eq!(report.matched.get("withdrawals_transferred"), Some(&1));
    assert_eq!(report.matched.get("withdrawals_rejected"), Some(&1));
    assert_eq!(report.matched.get("withdrawals_pending"), Some(&1));
    // The ledger sums to zero and matches the billing read model.
    let total: i64 = sqlx::query_scalar("SELECT sum(amount_fen)::bigint FROM ledger_postings")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(total, 0);
    let fees: i64 = sqlx::query_scalar("SELECT sum(platform_fee_fen)::bigint FROM chat_billings")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    let revenue: i64 = sqlx::query_scalar(
        "SELECT -balance_fen FROM ledger_balances WHERE account = 'platform:revenue'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(revenue, fees);
    assert_eq!(report.closing[ledger::PLATFORM_PAYOUTS], 300);
    assert_eq!(report.closing[&ledger::counselor_in_transit(2)], 100);
    wait_caught_up(&env).await;

    // A fresh replay equals the live read models.
    let diffs = fresh_replay_diff(&env).await;
    assert!(diffs.is_empty(), "{diffs:#?}");

    // Hand-edited rows are named by reconcile and by audit diff.
    sqlx::query(
        "UPDATE counselor_accounts SET balance_fen = balance_fen + 1 WHERE counselor_id = 1",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE ledger_balances SET balance_fen = balance_fen - 7 WHERE account = 'platform:revenue'",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    let report = reconcile_once(&env, "public").await;
    assert!(!report.ok());
    let text = report.differences.join("\n");
    assert!(
        text.contains("counselor_accounts counselor_id=1 balance_fen"),
        "{text}"
    );
    assert!(
        text.contains("ledger_balances account=platform:revenue"),
        "{text}"
    );
    let diffs = fresh_replay_diff(&env).await;
    let named: Vec<String> = diffs.iter().map(|d| d.to_string()).collect();
    assert_eq!(diffs.len(), 2, "{named:#?}");
    assert!(
        named
            .iter()
            .any(|d| d.starts_with("counselor_accounts [counselor_id=1]")
                && d.contains("balance_fen")),
        "{named:#?}"
    );
    assert!(
        named
            .iter()
            .any(|d| d.starts_with("ledger_balances [account=\"platform:revenue\"]")),
        "{named:#?}"
    );

    // The audit schema reconciles on its own.
    let audit = &diffs[0];
    let _ = audit;
    let schemas: Vec<String> =
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'audit_%'")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(schemas.len(), 1);
    assert!(reconcile_once(&env, &schemas[0]).await.ok());

    // A blue/green rebuild of everything (live workers running) repairs the tampering.
    let indexes_before = read_model_indexes(&env, "public").await;
    for p in projections::read_models() {
        projections::rebuild::rebuild(
            &env.pool,
            &env.client,
            p,
            &projections::rebuild::LogProgress,
        )
        .await
        .unwrap();
    }
    assert!(reconcile_once(&env, "public").await.ok());
    let diffs = fresh_replay_diff(&env).await;
    assert!(diffs.is_empty(), "{diffs:#?}");
    // Swapped-in tables have the migrated indexes, names and definitions, the secondary ones
    // (built after the shadow's replay) included.
    let indexes_after = read_model_indexes(&env, "public").await;
    assert!(indexes_after
        .iter()
        .any(|(name, _)| name == "ledger_postings_account"));
    assert!(indexes_after.iter().any(|(name, _)| name == "orders_user"));
    assert_eq!(indexes_after, indexes_before);

    // The live workers keep projecting into the swapped-in tables.
    order_story(&env.bus, 50, 101, 1, 10, 3).await;
    let report = reconcile_until_ok(&env, "public").await;
    assert_eq!(report.matched.get("sessions"), Some(&10));
    shutdown.cancel();
}

#[tokio::test]
async fn audit_replay_at_a_sequence_shows_the_state_then() {
    let env = env().await;
    let shutdown = CancellationToken::new();
    start_projectors(&env, &shutdown);
    order_story(&env.bus, 1, 7, 1, 10, 4).await;
    reconcile_until_ok(&env, "public").await;
    let mut js = async_nats::jetstream::new(env.client.clone());
    let mid = js
        .get_stream("EVENTS")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .last_sequence;
    order_story(&env.bus, 2, 7, 1, 20, 5).await;
    reconcile_until_ok(&env, "public").await;
    wait_caught_up(&env).await;

    let report = projections::rebuild::audit_replay(
        &env.pool,
        &env.client,
        &projections::read_models(),
        projections::rebuild::AuditPoint::Sequence(mid),
        &projections::rebuild::LogProgress,
    )
    .await
    .unwrap();
    assert_eq!(report.schema, format!("audit_seq{mid}"));
    let then: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {}.orders", report.schema))
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(then, 1);
    let wallet_then: i64 = sqlx::query_scalar(&format!(
        "SELECT balance_fen FROM {}.user_wallets WHERE user_id = 7",
        report.schema
    ))
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(wallet_then, 6 * 101);
    assert!(reconcile_once(&env, &report.schema).await.ok());
    let diffs = projections::rebuild::diff(
        &env.pool,
        &report.schema,
        "public",
        &projections::read_models(),
    )
    .await
    .unwrap();
    assert!(diffs
        .iter()
        .any(|d| d.table == "orders" && d.key == "id=2" && d.left.is_none()));
    // The same moment by time.
    let time_report = projections::rebuild::audit_replay(
        &env.pool,
        &env.client,
        &projections::read_models(),
        projections::rebuild::AuditPoint::Time(report.at),
        &projections::rebuild::LogProgress,
    )
    .await
    .unwrap();
    assert_eq!(time_report.events_upto, mid);
    let diffs = projections::rebuild::diff(
        &env.pool,
        &report.schema,
        &time_report.schema,
        &projections::read_models(),
    )
    .await
    .unwrap();
    assert!(diffs.is_empty(), "{diffs:#?}");
    // The secondary indexes, dropped while the replay wrote and built after it, are all back,
    // under the live names and with the live definitions.
    let live_indexes = read_model_indexes(&env, "public").await;
    assert!(live_indexes
        .iter()
        .any(|(name, _)| name == "ledger_postings_account"));
    assert_eq!(read_model_indexes(&env, &report.schema).await, live_indexes);
    // Audit tables are UNLOGGED: a PostgreSQL crash empties them, `audit_meta` included (done by
    // hand here). Diff and reconcile then refuse the schema instead of reading it as the past.
    let persistence: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT relpersistence::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relkind = 'r'",
    )
    .bind(&report.schema)
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(persistence, vec!["u".to_string()]);
    sqlx::query(&format!("TRUNCATE {}.audit_meta", report.schema))
        .execute(&env.pool)
        .await
        .unwrap();
    let refused = projections::rebuild::diff(
        &env.pool,
        &report.schema,
        "public",
        &projections::read_models(),
    )
    .await
    .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("run `mychat audit replay` again"),
        "{refused:#}"
    );
    let refused = projections::reconcile::reconcile(
        &env.pool,
        &env.client,
        &projections::reconcile::ReconcileOptions {
            schema: report.schema.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert!(refused.to_string().contains("is empty"), "{refused:#}");
    let _ = &mut js;
    shutdown.cancel();
}

#[tokio::test]
async fn an_unknown_event_type_is_refused_by_the_ledger() {
    let stored = eventstore::StoredEvent {
        stream_sequence: 9,
        index: 0,
        last_in_commit: true,
        aggregate_type: "payment".into(),
        aggregate_id: "3".into(),
        sequence: 4,
        event_type: "PaymentRefunded".into(),
        event_version: "1.0".into(),
        command_id: "c".into(),
        correlation_id: "c".into(),
        causation_id: None,
        actor: eventstore::Actor::system(),
        recorded_at: chrono::Utc::now(),
        payload: serde_json::json!({"PaymentRefunded": {"amount": 100}}),
    };
    let err = ledger::postings(&stored).unwrap_err();
    assert!(
        format!("{err:#}").contains("no posting rule for payment PaymentRefunded v1.0"),
        "{err:#}"
    );
    let mut other = stored.clone();
    other.aggregate_type = "voucher".into();
    assert!(ledger::postings(&other).is_err());
}

/// The indexes of every read model's tables in `schema`: (name, definition), the definition's
/// `ON <schema>.` written as `ON public.` so that schemas compare.
async fn read_model_indexes(env: &Env, schema: &str) -> Vec<(String, String)> {
    let tables: Vec<&str> = projections::read_models()
        .iter()
        .flat_map(|p| p.tables())
        .collect();
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT indexname::text, indexdef FROM pg_indexes WHERE schemaname = $1 \
         AND tablename = ANY($2) ORDER BY 1",
    )
    .bind(schema)
    .bind(&tables)
    .fetch_all(&env.pool)
    .await
    .unwrap();
    indexes
        .into_iter()
        .map(|(name, def)| (name, def.replace(&format!(" ON {schema}."), " ON public.")))
        .collect()
}
