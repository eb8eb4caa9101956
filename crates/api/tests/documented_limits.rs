//! Every request type that validates its input documents the same limits: a type deriving
//! `Validate` and `ToSchema` or `IntoParams` carries `#[web::limits]`, which writes its
//! `#[validate]` limits into the OpenAPI document (so they are never written twice).

use std::path::Path;

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_validated_documented_type_documents_its_validation() {
    let mut files = Vec::new();
    sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let mut missing = Vec::new();
    let mut seen = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let line = line.trim();
            let Some(derives) = line.strip_prefix("#[derive(") else {
                continue;
            };
            let names: Vec<&str> = derives
                .trim_end_matches(")]")
                .split(',')
                .map(str::trim)
                .collect();
            let validated = names.contains(&"Validate");
            let documented = names
                .iter()
                .any(|n| n.ends_with("ToSchema") || n.ends_with("IntoParams"));
            if !(validated && documented) {
                continue;
            }
            seen += 1;
            if i == 0 || lines[i - 1].trim() != "#[web::limits]" {
                missing.push(format!("{}:{}", file.display(), i + 1));
            }
        }
    }
    assert!(seen > 50, "found only {seen} validated request types");
    assert!(missing.is_empty(), "without #[web::limits]: {missing:#?}");
}
