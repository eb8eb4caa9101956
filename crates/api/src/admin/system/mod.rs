//! The admin API's system area: system configs ([`configs`]), the audit log ([`audit`]), the live
//! service registry ([`services`]), and
//! RBAC administration — roles with their permissions and administrators ([`roles`]), the
//! permission tree ([`permissions`]) and the menu tree ([`menus`]) (contract c.6 #69–#74, c.7).
//!
//! Rows are read as PostgreSQL renders them (`to_jsonb(row)`) into typed structs whose fields
//! are declared in the order `jsonb` stores keys (shorter keys first, then bytewise), so a typed
//! answer is byte for byte the JSON the admin client has always read. Inputs are typed bodies
//! ([`input`] reads values the way the admin client sends them) validated before any SQL runs;
//! every update names its columns.

/// A list answered at the root and in `data` (contract a.3, f.4): `{<key>: [...], list: [...],
/// total, code: 200, msg: "success", data: {<key>: [...], list: [...], total}}` — the list under
/// the key the server used and under the key the client reads. Declares the reply struct, the
/// page struct in its `data`, and `Reply::new(list, total)`.
macro_rules! root_list {
    ($(#[$doc:meta])* $reply:ident, $page:ident, $key:tt, $item:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
        pub struct $reply {
            /// The page's rows, under the key the server used.
            #[serde(rename = $key)]
            pub items: Vec<$item>,
            /// The same rows, under the key the client reads.
            pub list: Vec<$item>,
            /// How many rows match the filter (all pages).
            pub total: i64,
            /// Always 200.
            pub code: u16,
            /// Always `"success"`.
            pub msg: String,
            /// The same page again.
            pub data: $page,
        }

        #[doc = concat!("The `data` of [`", stringify!($reply), "`].")]
        #[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
        pub struct $page {
            /// The page's rows, under the key the server used.
            #[serde(rename = $key)]
            pub items: Vec<$item>,
            /// The same rows, under the key the client reads.
            pub list: Vec<$item>,
            /// How many rows match the filter (all pages).
            pub total: i64,
        }

        impl $reply {
            /// The page at the root and in `data`.
            pub fn new(list: Vec<$item>, total: i64) -> Self {
                Self {
                    items: list.clone(),
                    list: list.clone(),
                    total,
                    code: 200,
                    msg: "success".to_string(),
                    data: $page {
                        items: list.clone(),
                        list,
                        total,
                    },
                }
            }
        }
    };
}

// After `root_list!`: the modules below declare their lists with it.
pub mod audit;
pub mod configs;
pub mod input;
pub mod menus;
pub mod permissions;
pub mod roles;
pub mod services;
pub mod tree;

#[cfg(test)]
mod tests;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::admin::common::typed_row;
use crate::ApiError;

pub use crate::admin::common::{page_rows, typed_rows as fetch_rows};

/// One row PostgreSQL rendered as JSON (`to_jsonb(row)::text`), typed ([`typed_row`]).
///
/// # Errors
/// 500 when the row does not have `T`'s shape.
pub fn row<T: DeserializeOwned + Serialize>(text: &str) -> Result<T, ApiError> {
    typed_row(text, &[])
}

/// Rows PostgreSQL rendered as JSON, typed ([`typed_row`]).
///
/// # Errors
/// 500 when a row does not have `T`'s shape.
pub fn rows<T: DeserializeOwned + Serialize>(texts: &[String]) -> Result<Vec<T>, ApiError> {
    texts.iter().map(|s| typed_row(s, &[])).collect()
}
