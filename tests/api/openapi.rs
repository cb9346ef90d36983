//! The OpenAPI document is true: it lists exactly the registered routes and methods, and
//! schemathesis finds no server error and no answer that breaks it.

use std::collections::BTreeSet;
use std::process::Command;

use actix_web::{web, App, HttpRequest};

use crate::helpers::{have, spawn_app};

/// Every path pattern the App registers, read off actix's resource map (its Debug form: a tree of
/// `patterns: Single("...")` with `nodes: Some([...])` or `nodes: None`).
fn patterns_of(rmap: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut rest = rmap;
    loop {
        let next = ["patterns: Single(\"", "nodes: None", "nodes: Some([", "}])"]
            .iter()
            .filter_map(|t| rest.find(t).map(|i| (i, *t)))
            .min();
        let Some((i, token)) = next else { break };
        rest = &rest[i + token.len()..];
        match token {
            "patterns: Single(\"" => {
                let end = rest.find('"').unwrap();
                current = rest[..end].to_string();
            }
            "nodes: None" => {
                out.insert(format!("{}{}", stack.concat(), current));
            }
            "nodes: Some([" => stack.push(current.clone()),
            _ => {
                stack.pop();
            }
        }
    }
    out
}

#[actix_web::test]
async fn the_document_lists_exactly_the_registered_routes_and_methods() {
    let app = spawn_app().await;
    let svc = actix_web::test::init_service(
        App::new()
            .app_data(web::Data::from(app.core.clone()))
            .configure(gatehouse::routes)
            .route("/__rmap", web::get().to(|req: HttpRequest| async move { format!("{:?}", req.resource_map()) })),
    )
    .await;
    let req = actix_web::test::TestRequest::get().uri("/__rmap").to_request();
    let rmap = String::from_utf8(actix_web::test::call_and_read_body(&svc, req).await.to_vec()).unwrap();
    let mut registered = patterns_of(&rmap);
    registered.remove("/__rmap");

    let doc = app.get("/openapi.json").await;
    assert_eq!(doc.status, 200);
    assert_eq!(doc.json["openapi"], "3.0.3");
    let paths = doc.json["paths"].as_object().unwrap();
    let documented: BTreeSet<String> = paths.keys().cloned().collect();
    assert_eq!(documented, registered, "documented paths vs registered routes");

    // Each documented method reaches a handler; the others do not.
    for (path, ops) in paths {
        let concrete = path.replace("{app}", "no-app").replace("{user}", "no-user").replace("{code}", "no-code");
        for method in ["GET", "HEAD", "POST", "PUT", "DELETE"] {
            let a = app.send(method, &concrete, &[], None).await;
            let routed = a.status != 405 && !(a.status == 404 && (a.text.contains("Not found") || a.text.is_empty()));
            let documented = ops.get(method.to_lowercase()).is_some();
            assert_eq!(routed, documented, "{method} {path}: {} {}", a.status, a.text);
        }
    }
}

#[actix_web::test]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    if !have("schemathesis (pip install schemathesis)", Command::new("schemathesis").arg("--version")) {
        return;
    }
    let app = spawn_app().await;
    app.add_user("mark@example.com", "a long enough password", &["forepaas", "cms"]);
    let url = app.url("/openapi.json");
    let report = tempfile::tempdir().unwrap();
    let out = actix_web::web::block({
        let report = report.path().to_path_buf();
        move || {
            Command::new("schemathesis")
                .args([
                    "run",
                    &url,
                    "--checks",
                    "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
                ])
                .args(["--max-examples", "25", "--seed", "1", "--no-color", "--request-timeout", "10"])
                .env("SCHEMATHESIS_HOOKS", "")
                .current_dir(report)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    // Schemathesis leaves out the document it loaded (GET /openapi.json).
    let operations = doc_operations(&app).await - 1;
    assert!(
        stdout.contains(&format!("Tested: {operations}")),
        "every one of the {operations} operations was exercised: {stdout}"
    );
}

/// How many operations the document lists (each path's methods).
async fn doc_operations(app: &crate::helpers::TestApp) -> usize {
    let doc = app.get("/openapi.json").await;
    doc.json["paths"].as_object().unwrap().values().map(|p| p.as_object().unwrap().len()).sum()
}
