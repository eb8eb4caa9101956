//! The `ChatSession` aggregate (`ev.session.<id>`): started from a paid order, ended by either
//! participant (or by timeout / prepaid time running out), and **billed exactly once**, in the
//! same commit as the end.
//!
//! Billing (seed 000 / contract d.6, with the old backend's bugs fixed): billed minutes =
//! `ceil(seconds / 60)`, at least 1 and at most the prepaid minutes; amount = minutes × the price
//! per minute fixed when the order was placed; the platform keeps 30 % (rounded up to the fen, see
//! [`crate::split_platform_fee`]); the unused prepaid amount is refunded to the user's wallet.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::money::{billed_minutes, split_platform_fee};
use crate::{Fen, Timestamp, EVENT_VERSION};

/// Session status with MyChat's wire codes (contract a.6): 1 in progress, 2 ended.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionStatus {
    #[default]
    Absent,
    Active,
    Ended,
}

impl SessionStatus {
    /// The wire code of contract a.6 (`Absent` → 0, "waiting").
    pub fn code(self) -> i16 {
        match self {
            Self::Absent => 0,
            Self::Active => 1,
            Self::Ended => 2,
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// A participant ended it (HTTP end or the socket's `leave`).
    Participant,
    /// The prepaid minutes ran out.
    PrepaidTimeUsed,
    /// Nobody was active for the inactivity timeout.
    Inactivity,
}

/// The `ChatSession` aggregate's state.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatSession {
    pub status: SessionStatus,
    pub order_id: i64,
    pub user_id: i64,
    pub counselor_id: i64,
    /// The counselor's user account (the socket identity of the counselor).
    pub counselor_user_id: i64,
    pub price_per_minute: Fen,
    pub prepaid_minutes: i64,
    pub prepaid_amount: Fen,
    pub started_at: Option<Timestamp>,
}

impl ChatSession {
    /// True when `user_id` (a users-table id) is the session's user or its counselor.
    pub fn is_participant(&self, user_id: i64) -> bool {
        self.status != SessionStatus::Absent
            && (self.user_id == user_id || self.counselor_user_id == user_id)
    }
}

/// Commands on a `ChatSession`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SessionCommand {
    /// Starts the session of a paid order; the order's terms are copied in. Starting an active
    /// session again is a no-op (so a participant may "enter" twice); an ended one is refused.
    Start {
        order_id: i64,
        user_id: i64,
        counselor_id: i64,
        counselor_user_id: i64,
        price_per_minute: Fen,
        prepaid_minutes: i64,
        started_at: Timestamp,
    },
    /// Ends and bills the session. `ended_by` is the acting user id (0 for the system).
    End {
        ended_by: i64,
        reason: EndReason,
        ended_at: Timestamp,
    },
}

/// Events of a `ChatSession`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SessionEvent {
    SessionStarted {
        order_id: i64,
        user_id: i64,
        counselor_id: i64,
        counselor_user_id: i64,
        price_per_minute: Fen,
        prepaid_minutes: i64,
        prepaid_amount: Fen,
        started_at: Timestamp,
    },
    SessionEnded {
        ended_by: i64,
        reason: EndReason,
        ended_at: Timestamp,
        duration_seconds: i64,
    },
    /// The session's one bill. `amount = billed_minutes × price_per_minute`;
    /// `platform_fee + counselor_fee = amount`; `refund = prepaid_amount − amount`.
    SessionBilled {
        order_id: i64,
        user_id: i64,
        counselor_id: i64,
        duration_seconds: i64,
        billed_minutes: i64,
        price_per_minute: Fen,
        amount: Fen,
        platform_fee: Fen,
        counselor_fee: Fen,
        prepaid_amount: Fen,
        refund: Fen,
        billed_at: Timestamp,
    },
}

impl DomainEvent for SessionEvent {
    fn event_type(&self) -> String {
        match self {
            Self::SessionStarted { .. } => "SessionStarted",
            Self::SessionEnded { .. } => "SessionEnded",
            Self::SessionBilled { .. } => "SessionBilled",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        EVENT_VERSION.to_string()
    }
}

/// Why a session command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("session not found")]
    NotFound,
    #[error("session has ended")]
    AlreadyEnded,
    #[error("prepaid minutes must be positive")]
    InvalidPrepaid,
}

impl Aggregate for ChatSession {
    const TYPE: &'static str = "session";
    type Command = SessionCommand;
    type Event = SessionEvent;
    type Error = SessionError;
    type Services = ();

    async fn handle(
        &mut self,
        command: SessionCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), SessionError> {
        match command {
            SessionCommand::Start {
                order_id,
                user_id,
                counselor_id,
                counselor_user_id,
                price_per_minute,
                prepaid_minutes,
                started_at,
            } => match self.status {
                SessionStatus::Active => {}
                SessionStatus::Ended => return Err(SessionError::AlreadyEnded),
                SessionStatus::Absent => {
                    if prepaid_minutes <= 0 || price_per_minute <= 0 {
                        return Err(SessionError::InvalidPrepaid);
                    }
                    let event = SessionEvent::SessionStarted {
                        order_id,
                        user_id,
                        counselor_id,
                        counselor_user_id,
                        price_per_minute,
                        prepaid_minutes,
                        prepaid_amount: prepaid_minutes * price_per_minute,
                        started_at,
                    };
                    sink.write(event, self).await;
                }
            },
            SessionCommand::End {
                ended_by,
                reason,
                ended_at,
            } => {
                match self.status {
                    SessionStatus::Absent => return Err(SessionError::NotFound),
                    SessionStatus::Ended => return Err(SessionError::AlreadyEnded),
                    SessionStatus::Active => {}
                }
                let started_at = self.started_at.unwrap_or(ended_at);
                let duration_seconds = (ended_at - started_at).num_seconds().max(0);
                let minutes = billed_minutes(duration_seconds, self.prepaid_minutes);
                let amount = minutes * self.price_per_minute;
                let (platform_fee, counselor_fee) = split_platform_fee(amount);
                sink.write(
                    SessionEvent::SessionEnded {
                        ended_by,
                        reason,
                        ended_at,
                        duration_seconds,
                    },
                    self,
                )
                .await;
                let bill = SessionEvent::SessionBilled {
                    order_id: self.order_id,
                    user_id: self.user_id,
                    counselor_id: self.counselor_id,
                    duration_seconds,
                    billed_minutes: minutes,
                    price_per_minute: self.price_per_minute,
                    amount,
                    platform_fee,
                    counselor_fee,
                    prepaid_amount: self.prepaid_amount,
                    refund: self.prepaid_amount - amount,
                    billed_at: ended_at,
                };
                sink.write(bill, self).await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: SessionEvent) {
        match event {
            SessionEvent::SessionStarted {
                order_id,
                user_id,
                counselor_id,
                counselor_user_id,
                price_per_minute,
                prepaid_minutes,
                prepaid_amount,
                started_at,
            } => {
                self.status = SessionStatus::Active;
                self.order_id = order_id;
                self.user_id = user_id;
                self.counselor_id = counselor_id;
                self.counselor_user_id = counselor_user_id;
                self.price_per_minute = price_per_minute;
                self.prepaid_minutes = prepaid_minutes;
                self.prepaid_amount = prepaid_amount;
                self.started_at = Some(started_at);
            }
            SessionEvent::SessionEnded { .. } => self.status = SessionStatus::Ended,
            SessionEvent::SessionBilled { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn at(seconds: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    fn started() -> SessionEvent {
        SessionEvent::SessionStarted {
            order_id: 1,
            user_id: 7,
            counselor_id: 3,
            counselor_user_id: 4,
            price_per_minute: 500,
            prepaid_minutes: 10,
            prepaid_amount: 5_000,
            started_at: at(0),
        }
    }

    fn end_after(seconds: i64) -> SessionCommand {
        SessionCommand::End {
            ended_by: 7,
            reason: EndReason::Participant,
            ended_at: at(seconds),
        }
    }

    fn billed(seconds: i64, minutes: i64) -> Vec<SessionEvent> {
        let amount = minutes * 500;
        let (platform_fee, counselor_fee) = split_platform_fee(amount);
        vec![
            SessionEvent::SessionEnded {
                ended_by: 7,
                reason: EndReason::Participant,
                ended_at: at(seconds),
                duration_seconds: seconds,
            },
            SessionEvent::SessionBilled {
                order_id: 1,
                user_id: 7,
                counselor_id: 3,
                duration_seconds: seconds,
                billed_minutes: minutes,
                price_per_minute: 500,
                amount,
                platform_fee,
                counselor_fee,
                prepaid_amount: 5_000,
                refund: 5_000 - amount,
                billed_at: at(seconds),
            },
        ]
    }

    #[test]
    fn ending_bills_started_minutes_rounded_up() {
        TestFramework::<ChatSession>::with(())
            .given(vec![started()])
            .when(end_after(61))
            .then_expect_events(billed(61, 2));
    }

    #[test]
    fn a_short_session_bills_at_least_one_minute() {
        TestFramework::<ChatSession>::with(())
            .given(vec![started()])
            .when(end_after(5))
            .then_expect_events(billed(5, 1));
    }

    #[test]
    fn billing_is_capped_at_the_prepaid_minutes() {
        TestFramework::<ChatSession>::with(())
            .given(vec![started()])
            .when(end_after(3_600))
            .then_expect_events(billed(3_600, 10));
    }

    #[test]
    fn a_session_is_billed_exactly_once() {
        let mut history = vec![started()];
        history.extend(billed(61, 2));
        TestFramework::<ChatSession>::with(())
            .given(history)
            .when(end_after(120))
            .then_expect_error(SessionError::AlreadyEnded);
    }

    #[test]
    fn starting_an_active_session_again_changes_nothing() {
        TestFramework::<ChatSession>::with(())
            .given(vec![started()])
            .when(SessionCommand::Start {
                order_id: 1,
                user_id: 7,
                counselor_id: 3,
                counselor_user_id: 4,
                price_per_minute: 500,
                prepaid_minutes: 10,
                started_at: at(30),
            })
            .then_expect_events(vec![]);
    }
}
