//! The committed OpenAPI document (`docs/openapi/billing.json`) is the one
//! the service generates and serves; a stale copy fails here. To refresh it:
//!
//! ```text
//! UPDATE_OPENAPI=1 cargo test -p billing --test openapi
//! ```

use std::path::PathBuf;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi/billing.json")
}

#[test]
fn committed_document_is_the_generated_one() {
    let generated = billing::http::openapi();
    let path = committed_path();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is stale (or missing): the service's generated OpenAPI document differs.\n\
         Regenerate it with: UPDATE_OPENAPI=1 cargo test -p billing --test openapi",
        path.display()
    );
}

#[test]
fn every_operation_states_its_role_and_errors() {
    let doc: serde_json::Value = serde_json::from_str(&billing::http::openapi()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            let role = op["x-role"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path}: no x-role"));
            let responses = op["responses"].as_object().unwrap();
            for code in ["429", "503"] {
                assert!(responses.contains_key(code), "{method} {path}: no {code}");
            }
            if role == "none" {
                assert!(op.get("security").is_none(), "{method} {path}");
            } else {
                assert!(
                    ["viewer", "clerk", "admin"].contains(&role),
                    "{method} {path}"
                );
                assert!(op["security"][0].get("bearer").is_some(), "{method} {path}");
                assert!(responses.contains_key("401") && responses.contains_key("403"));
            }
            for (code, r) in responses {
                if !code.starts_with('2') {
                    assert_eq!(
                        r["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{method} {path} {code}"
                    );
                }
            }
            if let Some(params) = op["parameters"].as_array() {
                for p in params {
                    assert!(
                        p.get("schema").is_some(),
                        "{method} {path}: {p} has no schema"
                    );
                }
            }
        }
    }
    // Every route of the router, the whoami shared with ingest included,
    // and the ten master-data operations (#15).
    assert_eq!(operations, 35);
    let limit = |path: &str| {
        doc["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "limit")
            .unwrap()["schema"]["maximum"]
            .clone()
    };
    assert_eq!(limit("/api/v1/bills"), 1000);
    assert_eq!(limit("/api/v1/bills/search"), 200);
}
