//! The committed copy of ingest's OpenAPI document (`docs/openapi/ingest.json`)
//! is the one the service serves, and the document states what the fuzzer
//! (`scripts/api-fuzz`) and the console rely on: every route, its role, its
//! bounds and every status it can answer with the one error body.
//!
//! Regenerate the copy with `UPDATE_OPENAPI=1 cargo test -p ingest --test openapi`.

use serde_json::Value;
use std::path::PathBuf;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi/ingest.json")
}

fn doc() -> Value {
    serde_json::from_str(&ingest::http::openapi_pretty()).expect("the document is JSON")
}

#[test]
fn the_committed_copy_is_current() {
    let generated = ingest::http::openapi_pretty();
    let path = committed_path();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).expect("write docs/openapi/ingest.json");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi/ingest.json is stale (or missing): the API changed. Regenerate it with\n\
         \n    UPDATE_OPENAPI=1 cargo test -p ingest --test openapi\n\n\
         and commit the result."
    );
}

#[test]
fn every_operation_states_its_role_and_every_error_it_can_answer() {
    let doc = doc();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            let at = format!("{method} {path}");
            let responses = op["responses"].as_object().unwrap();
            for status in ["429", "503"] {
                assert!(responses.contains_key(status), "{at} documents {status}");
            }
            for (status, r) in responses {
                let schema = &r["content"]["application/json"]["schema"];
                if !status.starts_with('2') {
                    assert_eq!(
                        schema["$ref"], "#/components/schemas/ErrorBody",
                        "{at} answers {status} with the one error body"
                    );
                }
            }
            if path == "/api/v1/openapi.json" {
                continue;
            }
            let role = op["x-role"]
                .as_str()
                .unwrap_or_else(|| panic!("{at} states its role"));
            assert!(op["description"]
                .as_str()
                .unwrap()
                .contains(&format!("Role: {role}")));
            assert!(responses.contains_key("401"), "{at} documents 401");
            assert_eq!(
                responses.contains_key("403"),
                role != "viewer",
                "{at}: 403 iff above viewer"
            );
            assert_eq!(
                op["security"][0]["bearer"],
                serde_json::json!([]),
                "{at} needs a token"
            );
            let has_id = path.contains("{id}");
            assert_eq!(
                responses.contains_key("404"),
                has_id && !path.ends_with("/quarantine"),
                "{at}: 404"
            );
            for p in op["parameters"].as_array().into_iter().flatten() {
                assert!(
                    p["schema"].is_object(),
                    "{at}: parameter {} has a schema",
                    p["name"]
                );
                if p["name"] == "limit" {
                    assert!(
                        p["schema"]["minimum"] == 1 && p["schema"]["maximum"].is_number(),
                        "{at}: limit bounded"
                    );
                }
            }
        }
    }
    assert_eq!(operations, 15, "every route of the router is documented");
}

/// Every `$ref` in `v`.
fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn every_reference_resolves() {
    let doc = doc();
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(!found.is_empty());
    for r in found {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{r} points into components/schemas"));
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{r} resolves (a type used only in parameters must be listed in components)"
        );
    }
}

#[test]
fn the_registry_batch_documents_its_bounds_and_known_profiles() {
    let doc = doc();
    let put = &doc["paths"]["/api/v1/meters"]["put"];
    let mut statuses: Vec<&str> = put["responses"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        ["200", "400", "401", "403", "413", "422", "429", "503"]
    );
    assert_eq!(put["x-role"], "operator");
    assert_eq!(
        doc["components"]["schemas"]["MeterBatch"]["properties"]["meters"]["maxItems"],
        ingest::registry_api::MAX_BATCH_METERS
    );
    let listed: Vec<&str> = doc["components"]["schemas"]["MeterRegistration"]["properties"]
        ["profile_id"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let mut known: Vec<&str> = ingest::registry::known_profiles()
        .keys()
        .map(String::as_str)
        .collect();
    known.sort_unstable();
    assert_eq!(
        listed, known,
        "the document lists exactly the device profiles ingest knows"
    );
}
