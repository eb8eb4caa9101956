//! Payments: checkout (create, the sandbox cashier and callback, the providers' notifications)
//! and the payment records (list, detail, refund).

pub mod checkout;
pub mod notifications;
pub mod providers;
pub mod records;

use utoipa_axum::router::OpenApiRouter;

use crate::user::state::UserState;

/// The routes of this area; the sandbox cashier and callback only with `sandbox_cashier`.
pub fn router(sandbox_cashier: bool) -> OpenApiRouter<UserState> {
    OpenApiRouter::new()
        .merge(checkout::router(sandbox_cashier))
        .merge(records::router())
}
