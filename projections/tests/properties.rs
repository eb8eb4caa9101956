//! Property tests (proptest): random valid histories of orders, payments, sessions, refunds and
//! withdrawals keep the ledger summing to zero with no negative balance, and a fresh replay
//! equals the live projections.
//!
//! - `ledger_postings_balance_for_random_histories`: many cases, pure (the posting rules over
//!   generated events).
//! - `random_histories_reconcile_and_replay_equal_live`: a few cases end to end — the history is
//!   driven through the command bus (process manager included) into live projectors on real
//!   nats-server and Postgres; after each case `reconcile` passes and a fresh audit replay
//!   diffs empty against the live read models.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};

use common::*;
use domain::{
    split_platform_fee, AccountEvent, CreditReason, PaymentEvent, SessionEvent, WalletEvent,
};
use eventstore::StoredEvent;
use projections::ledger::{normal_balance, postings};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tokio_util::sync::CancellationToken;

/// One order's story: (minutes prepaid 10..=60, minutes used 1..=prepaid, price fen/min, method,
/// user, counselor), then a withdrawal share in percent and its outcome (0 none, 1 transfer,
/// 2 reject, 3 left pending).
#[derive(Debug, Clone)]
struct Story {
    minutes: i64,
    used: i64,
    price: i64,
    method: usize,
    user: i64,
    counselor: i64,
    withdraw_percent: i64,
    outcome: u8,
}

fn story() -> impl Strategy<Value = Story> {
    (
        10i64..=60,
        1i64..=1000,
        0usize..3,
        1i64..=3,
        1i64..=2,
        0i64..=100,
        0u8..=3,
    )
        .prop_flat_map(
            |(minutes, price, method, user, counselor, withdraw_percent, outcome)| {
                (1i64..=minutes).prop_map(move |used| Story {
                    minutes,
                    used,
                    price,
                    method,
                    user,
                    counselor,
                    withdraw_percent,
                    outcome,
                })
            },
        )
}

fn stored(seq: u64, aggregate_type: &str, id: i64, payload: serde_json::Value) -> StoredEvent {
    let event_type = payload
        .as_object()
        .and_then(|o| o.keys().next().cloned())
        .unwrap_or_default();
    StoredEvent {
        stream_sequence: seq,
        index: 0,
        last_in_commit: true,
        aggregate_type: aggregate_type.into(),
        aggregate_id: id.to_string(),
        sequence: 1,
        event_type,
        event_version: domain::EVENT_VERSION.into(),
        command_id: format!("c{seq}"),
        correlation_id: format!("c{seq}"),
        causation_id: None,
        actor: eventstore::Actor::system(),
        recorded_at: base(),
        payload,
    }
}

/// The money events of `stories`, as the domain and the process manager would record them.
fn history(stories: &[Story]) -> Vec<StoredEvent> {
    let mut out = Vec::new();
    let mut seq = 0u64;
    let mut next = |out: &mut Vec<StoredEvent>, t: &str, id: i64, v: serde_json::Value| {
        seq += 1;
        out.push(stored(seq, t, id, v));
    };
    let mut payable: BTreeMap<i64, i64> = BTreeMap::new();
    for (i, s) in stories.iter().enumerate() {
        let id = i as i64 + 1;
        let prepaid = s.minutes * s.price;
        let method = ["sandbox", "wechat", "alipay"][s.method];
        next(
            &mut out,
            "payment",
            id,
            serde_json::to_value(PaymentEvent::PaymentCaptured {
                order_id: id,
                user_id: s.user,
                method: method.into(),
                provider_txn_id: format!("T{id}"),
                amount: prepaid,
                captured_at: base(),
            })
            .unwrap(),
        );
        let amount = s.used * s.price;
        let (platform_fee, counselor_fee) = split_platform_fee(amount);
        next(
            &mut out,
            "session",
            id,
            serde_json::to_value(SessionEvent::SessionBilled {
                order_id: id,
                user_id: s.user,
                counselor_id: s.counselor,
                duration_seconds: s.used * 60,
                billed_minutes: s.used,
                price_per_minute: s.price,
                amount,
                platform_fee,
                counselor_fee,
                prepaid_amount: prepaid,
                refund: prepaid - amount,
                billed_at: base(),
            })
            .unwrap(),
        );
        next(
            &mut out,
            "account",
            s.counselor,
            serde_json::to_value(AccountEvent::EarningsCredited {
                counselor_id: s.counselor,
                session_id: id,
                order_id: id,
                amount: counselor_fee,
                at: base(),
            })
            .unwrap(),
        );
        *payable.entry(s.counselor).or_default() += counselor_fee;
        if prepaid > amount {
            next(
                &mut out,
                "wallet",
                s.user,
                serde_json::to_value(WalletEvent::WalletCredited {
                    user_id: s.user,
                    amount: prepaid - amount,
                    reason: CreditReason::SessionRefund {
                        session_id: id,
                        order_id: id,
                    },
                    balance_after: 0,
                    at: base(),
                })
                .unwrap(),
            );
        }
        let w = payable[&s.counselor] * s.withdraw_percent / 100;
        if s.outcome > 0 && w > 0 {
            *payable.get_mut(&s.counselor).unwrap() -= w;
            next(
                &mut out,
                "account",
                s.counselor,
                serde_json::to_value(AccountEvent::WithdrawalRequested {
                    counselor_id: s.counselor,
                    withdrawal_id: id,
                    amount: w,
                    bank_name: "B".into(),
                    bank_account: "1".into(),
                    account_name: "C".into(),
                    at: base(),
                })
                .unwrap(),
            );
            match s.outcome {
                1 => next(
                    &mut out,
                    "account",
                    s.counselor,
                    serde_json::to_value(AccountEvent::WithdrawalTransferred {
                        withdrawal_id: id,
                        amount: w,
                        admin_id: 1,
                        at: base(),
                    })
                    .unwrap(),
                ),
                2 => {
                    *payable.get_mut(&s.counselor).unwrap() += w;
                    next(
                        &mut out,
                        "account",
                        s.counselor,
                        serde_json::to_value(AccountEvent::WithdrawalRejected {
                            withdrawal_id: id,
                            amount: w,
                            admin_id: 1,
                            reason: "r".into(),
                            at: base(),
                        })
                        .unwrap(),
                    );
                }
                _ => {}
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(Config::with_cases(256))]
    #[test]
    fn ledger_postings_balance_for_random_histories(stories in prop::collection::vec(story(), 1..30)) {
        let mut balances: BTreeMap<String, i64> = BTreeMap::new();
        for e in history(&stories) {
            let lines = postings(&e).unwrap();
            prop_assert_eq!(lines.iter().map(|p| p.amount).sum::<i64>(), 0, "{} does not balance", e.event_type);
            for p in lines {
                *balances.entry(p.account).or_default() += p.amount;
            }
            for (account, signed) in &balances {
                prop_assert!(normal_balance(account, *signed) >= 0, "{} negative after {}", account, e.event_type);
            }
        }
        prop_assert_eq!(balances.values().sum::<i64>(), 0);
        // Every prepaid amount is either billed or refunded; nothing is left pending.
        for (account, signed) in &balances {
            if account.ends_with(":prepaid") || account.ends_with(":pending") {
                prop_assert_eq!(*signed, 0, "{}", account);
            }
        }
    }
}

#[test]
fn random_histories_reconcile_and_replay_equal_live() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let env = rt.block_on(env());
    let shutdown = CancellationToken::new();
    rt.block_on(async { start_projectors(&env, &shutdown) });
    let ids = AtomicI64::new(1);
    let withdrawals = AtomicI64::new(1);
    let mut runner = TestRunner::new(Config {
        cases: 4,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&prop::collection::vec(story(), 1..5), |stories| {
            rt.block_on(async {
                for s in &stories {
                    let id = ids.fetch_add(1, Ordering::SeqCst);
                    order_story_priced(
                        &env.bus,
                        id,
                        s.user,
                        s.counselor,
                        s.minutes,
                        s.used,
                        s.price,
                    )
                    .await;
                    if s.outcome > 0 {
                        // Withdraw a share of what the account holds once it is credited.
                        let (_, counselor_fee) = split_platform_fee(s.used * s.price);
                        wait_for_balance(&env.bus, s.counselor, counselor_fee).await;
                        let (account, _) = env
                            .bus
                            .load::<domain::CounselorAccount>(&s.counselor.to_string())
                            .await
                            .unwrap();
                        let w = account.balance * s.withdraw_percent / 100;
                        if w > 0 {
                            let wid = withdrawals.fetch_add(1, Ordering::SeqCst);
                            let outcome = ["", "transfer", "reject", "pending"][s.outcome as usize];
                            withdraw(&env.bus, s.counselor, wid, w, outcome).await;
                        }
                    }
                }
                let report = reconcile_until_ok(&env, "public").await;
                assert!(report.closing.values().all(|v| *v >= 0));
                wait_caught_up(&env).await;
                let diffs = fresh_replay_diff(&env).await;
                assert!(diffs.is_empty(), "{diffs:#?}");
            });
            Ok(())
        })
        .unwrap();
    shutdown.cancel();
}
