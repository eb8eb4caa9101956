//! `#[web::limits]`: a request type's validation rules are its documentation.
//!
//! mychat validates request bodies and query strings with the `validator` crate
//! (`#[derive(Validate)]`, `#[validate(range(..))]`, …) and documents them with utoipa
//! (`#[derive(ToSchema)]` / `#[derive(IntoParams)]`). The two read different attributes, so a limit
//! would be written twice and could drift: a client generated from the document would then send
//! "valid" input the handler refuses. No maintained crate bridges `validator` to utoipa (schemars
//! reads `#[validate]`, utoipa does not), so this attribute does: placed above the `derive`, it
//! reads each field's `#[validate(..)]` and adds the matching utoipa field attribute, which utoipa
//! merges with any other `#[schema(..)]`/`#[param(..)]` on the field.
//!
//! | `#[validate(..)]` | OpenAPI |
//! |---|---|
//! | `range(min = a, max = b)` | `minimum: a`, `maximum: b` |
//! | `range(exclusive_min = a, exclusive_max = b)` | `exclusiveMinimum`, `exclusiveMaximum` |
//! | `length(min = a, max = b)` / `length(equal = n)` on text | `minLength`, `maxLength` |
//! | the same on a list (`Vec`, `HashSet`, `BTreeSet`) | `minItems`, `maxItems` |
//! | `required` | listed in `required`, not nullable |
//! | `custom(function = "web::text::not_blank")` (any path ending in `not_blank`) | `pattern`: a character that is not white space |
//! | `custom(function = "web::text::trimmed")` (any path ending in `trimmed`) | `pattern`: no surrounding white space, not empty |
//!
//! Other rules the document cannot state (`custom(..)`, `nested`, cross-field rules) are skipped; their
//! fields say their rule in a doc comment or a `value_type`. A bound must be a number literal (the
//! form utoipa accepts); anything else is a compile error naming the field.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as Tokens;
use quote::quote;
use syn::{parse_macro_input, spanned::Spanned, Attribute, Expr, Fields, ItemStruct, Lit, Type};

/// Documents the `#[validate]` limits of a struct's fields in its utoipa schema (`ToSchema`:
/// `#[schema(..)]`) or parameters (`IntoParams`: `#[param(..)]`). Put it above the `derive`.
///
/// ```ignore
/// #[web::limits]
/// #[derive(Deserialize, ToSchema, Validate)]
/// pub struct CreateOrder {
///     #[validate(range(min = 10, max = 180))] // documented as minimum: 10, maximum: 180
///     pub duration: i64,
/// }
/// ```
#[proc_macro_attribute]
pub fn limits(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        let attr = Tokens::from(attr);
        return syn::Error::new(attr.span(), "`#[limits]` takes no arguments")
            .to_compile_error()
            .into();
    }
    let mut item = parse_macro_input!(item as ItemStruct);
    match document(&mut item) {
        Ok(()) => quote!(#item).into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// Where utoipa reads a field's schema features: `schema` for `ToSchema`, `param` for
/// `IntoParams`.
fn helpers(attrs: &[Attribute]) -> syn::Result<Vec<&'static str>> {
    let mut found = Vec::new();
    for attr in attrs.iter().filter(|a| a.path().is_ident("derive")) {
        attr.parse_nested_meta(|meta| {
            match meta
                .path
                .segments
                .last()
                .map(|s| s.ident.to_string())
                .as_deref()
            {
                Some("ToSchema") => found.push("schema"),
                Some("IntoParams") => found.push("param"),
                _ => {}
            }
            Ok(())
        })?;
    }
    Ok(found)
}

fn document(item: &mut ItemStruct) -> syn::Result<()> {
    let helpers = helpers(&item.attrs)?;
    if helpers.is_empty() {
        return Err(syn::Error::new(
            item.ident.span(),
            "`#[limits]` goes above a `#[derive(..)]` with `ToSchema` or `IntoParams`",
        ));
    }
    let Fields::Named(fields) = &mut item.fields else {
        return Err(syn::Error::new(
            item.ident.span(),
            "`#[limits]` documents the named fields of a struct",
        ));
    };
    for field in &mut fields.named {
        let rules = Rules::of(&field.attrs)?;
        let features = rules.features(is_list(&field.ty));
        if features.is_empty() {
            continue;
        }
        for helper in &helpers {
            let helper = syn::Ident::new(helper, field.span());
            field
                .attrs
                .push(syn::parse_quote!(#[#helper(#(#features),*)]));
        }
    }
    Ok(())
}

/// The limits one field's `#[validate(..)]` attributes enforce.
#[derive(Default)]
struct Rules {
    minimum: Option<Expr>,
    maximum: Option<Expr>,
    exclusive_minimum: Option<Expr>,
    exclusive_maximum: Option<Expr>,
    min_length: Option<Expr>,
    max_length: Option<Expr>,
    required: bool,
    /// The text pattern a `custom` rule states (`not_blank`, `trimmed`).
    pattern: Option<&'static str>,
}

/// The pattern of `web::text::not_blank` (`web::text::NOT_BLANK_PATTERN`, which a test in `web`
/// compares with what this attribute writes; utoipa takes a pattern only as a literal).
const NOT_BLANK_PATTERN: &str =
    r"[^\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]";

/// The pattern of `web::text::trimmed` (`web::text::TRIMMED_PATTERN`, compared as above).
const TRIMMED_PATTERN: &str = r"^[^\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000](?:[\s\S]*[^\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000])?$";

impl Rules {
    fn of(attrs: &[Attribute]) -> syn::Result<Self> {
        let mut rules = Self::default();
        for attr in attrs.iter().filter(|a| a.path().is_ident("validate")) {
            attr.parse_nested_meta(|rule| {
                if rule.path.is_ident("range") {
                    rule.parse_nested_meta(|bound| {
                        let slot = if bound.path.is_ident("min") {
                            &mut rules.minimum
                        } else if bound.path.is_ident("max") {
                            &mut rules.maximum
                        } else if bound.path.is_ident("exclusive_min") {
                            &mut rules.exclusive_minimum
                        } else if bound.path.is_ident("exclusive_max") {
                            &mut rules.exclusive_maximum
                        } else {
                            return skip(&bound);
                        };
                        *slot = Some(number(bound.value()?.parse()?)?);
                        Ok(())
                    })
                } else if rule.path.is_ident("length") {
                    rule.parse_nested_meta(|bound| {
                        if bound.path.is_ident("min") {
                            rules.min_length = Some(number(bound.value()?.parse()?)?);
                        } else if bound.path.is_ident("max") {
                            rules.max_length = Some(number(bound.value()?.parse()?)?);
                        } else if bound.path.is_ident("equal") {
                            let n = number(bound.value()?.parse()?)?;
                            rules.min_length = Some(n.clone());
                            rules.max_length = Some(n);
                        } else {
                            return skip(&bound);
                        }
                        Ok(())
                    })
                } else if rule.path.is_ident("required") {
                    rules.required = true;
                    skip(&rule)
                } else if rule.path.is_ident("custom") {
                    rule.parse_nested_meta(|arg| {
                        if arg.path.is_ident("function") {
                            let function = match arg.value()?.parse::<Expr>()? {
                                Expr::Lit(syn::ExprLit {
                                    lit: Lit::Str(path),
                                    ..
                                }) => path.value(),
                                other => quote!(#other).to_string(),
                            };
                            match function.rsplit("::").next().map(str::trim) {
                                Some("not_blank") => rules.pattern = Some(NOT_BLANK_PATTERN),
                                Some("trimmed") => rules.pattern = Some(TRIMMED_PATTERN),
                                _ => {}
                            }
                            Ok(())
                        } else {
                            skip(&arg)
                        }
                    })
                } else {
                    skip(&rule)
                }
            })?;
        }
        Ok(rules)
    }

    /// The utoipa field features stating these limits; `list`: the field is a collection, whose
    /// length is counted in items.
    fn features(&self, list: bool) -> Vec<Tokens> {
        let mut out = Vec::new();
        let mut put = |name: &str, value: &Option<Expr>| {
            if let Some(value) = value {
                let name = syn::Ident::new(name, value.span());
                out.push(quote!(#name = #value));
            }
        };
        put("minimum", &self.minimum);
        put("maximum", &self.maximum);
        put("exclusive_minimum", &self.exclusive_minimum);
        put("exclusive_maximum", &self.exclusive_maximum);
        if list {
            put("min_items", &self.min_length);
            put("max_items", &self.max_length);
        } else {
            put("min_length", &self.min_length);
            put("max_length", &self.max_length);
        }
        if let Some(pattern) = self.pattern {
            out.push(quote!(pattern = #pattern));
        }
        if self.required {
            out.push(quote!(required = true));
            out.push(quote!(nullable = false));
        }
        out
    }
}

/// Consumes a rule or an argument this attribute does not document (`custom(..)`, `message = ..`,
/// `nested`, …).
fn skip(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        meta.value()?.parse::<Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        meta.input.parse::<proc_macro2::Group>()?;
    }
    Ok(())
}

/// A bound as the number literal utoipa takes (`-1` included).
fn number(expr: Expr) -> syn::Result<Expr> {
    let literal =
        |e: &Expr| matches!(e, Expr::Lit(lit) if matches!(lit.lit, Lit::Int(_) | Lit::Float(_)));
    match &expr {
        e if literal(e) => Ok(expr),
        Expr::Unary(u) if matches!(u.op, syn::UnOp::Neg(_)) && literal(&u.expr) => Ok(expr),
        _ => Err(syn::Error::new(
            expr.span(),
            "a documented limit must be a number literal (utoipa states only literals)",
        )),
    }
}

/// The field holds a collection (possibly optional): its `length` counts items.
fn is_list(ty: &Type) -> bool {
    let Type::Path(path) = ty else {
        return false;
    };
    let Some(last) = path.path.segments.last() else {
        return false;
    };
    match last.ident.to_string().as_str() {
        "Vec" | "HashSet" | "BTreeSet" => true,
        "Option" => match &last.arguments {
            syn::PathArguments::AngleBracketed(args) => args
                .args
                .iter()
                .any(|arg| matches!(arg, syn::GenericArgument::Type(inner) if is_list(inner))),
            _ => false,
        },
        _ => false,
    }
}
