//! `#[web::limits]`: the limits a request type validates are the limits its schema documents.

use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, PartialSchema, ToSchema};
use validator::Validate;

#[web::limits]
#[derive(Deserialize, ToSchema, Validate)]
struct Body {
    #[validate(range(min = 10, max = 180, message = "minutes"))]
    duration: i64,
    #[validate(range(exclusive_min = 0.0))]
    amount: f64,
    #[validate(required(message = "required"), length(min = 1, max = 50))]
    name: Option<String>,
    #[validate(length(min = 1, max = 64))]
    scopes: Vec<String>,
    #[validate(length(equal = 3))]
    code: String,
    /// A rule the document cannot state is left to the doc comment.
    #[validate(custom(function = "anything"))]
    free: String,
    #[validate(custom(function = "web::text::not_blank"), length(max = 100))]
    title: String,
    #[validate(custom(function = "web::text::trimmed"))]
    key: String,
}

fn anything(_: &str) -> Result<(), validator::ValidationError> {
    Ok(())
}

#[web::limits]
#[derive(Deserialize, IntoParams, Validate)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct Params {
    #[validate(range(min = 1))]
    page: Option<i64>,
    #[validate(range(min = -1, max = 1))]
    status: Option<i16>,
    #[validate(required)]
    keyword: Option<String>,
}

fn props() -> Value {
    serde_json::to_value(Body::schema()).unwrap()
}

#[test]
fn validation_limits_become_the_schema_limits() {
    let schema = props();
    let p = &schema["properties"];
    assert_eq!(p["duration"]["minimum"], json!(10));
    assert_eq!(p["duration"]["maximum"], json!(180));
    assert_eq!(p["amount"]["exclusiveMinimum"].as_f64(), Some(0.0));
    assert_eq!(p["name"]["minLength"], json!(1));
    assert_eq!(p["name"]["maxLength"], json!(50));
    assert_eq!(p["name"]["type"], json!("string"), "required: not nullable");
    assert_eq!(p["scopes"]["minItems"], json!(1));
    assert_eq!(p["scopes"]["maxItems"], json!(64));
    assert_eq!(p["code"]["minLength"], json!(3));
    assert_eq!(p["code"]["maxLength"], json!(3));
    assert!(p["free"].get("minLength").is_none());
    assert!(p["free"].get("pattern").is_none());
    assert_eq!(p["title"]["pattern"], json!(web::text::NOT_BLANK_PATTERN));
    assert_eq!(p["title"]["maxLength"], json!(100));
    assert_eq!(p["key"]["pattern"], json!(web::text::TRIMMED_PATTERN));
    let required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(required.contains(&"name"), "{required:?}");
}

#[test]
fn validation_limits_become_the_parameter_limits() {
    let params = serde_json::to_value(Params::into_params(|| None)).unwrap();
    let page = params
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "page")
        .unwrap();
    assert_eq!(page["schema"]["minimum"], json!(1));
    let status = params
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "status")
        .unwrap();
    assert_eq!(status["schema"]["minimum"], json!(-1));
    assert_eq!(status["schema"]["maximum"], json!(1));
    assert_eq!(page["required"], json!(false));
    let keyword = params
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "keyword")
        .unwrap();
    assert_eq!(keyword["required"], json!(true));
}

#[test]
fn what_is_validated_is_what_is_documented() {
    let bad = Body {
        duration: 9,
        amount: 0.0,
        name: None,
        scopes: vec![],
        code: "ab".into(),
        free: String::new(),
        title: " \u{3000}".into(),
        key: "key ".into(),
    };
    let errors = bad.validate().unwrap_err();
    let fields = errors.field_errors();
    for field in [
        "duration", "amount", "name", "scopes", "code", "title", "key",
    ] {
        assert!(fields.contains_key(field), "{field} is validated");
        assert!(props()["properties"][field].is_object());
    }
}
