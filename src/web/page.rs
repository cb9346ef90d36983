//! What the doors that serve a page share (the built-in pages, the device page): their answers,
//! marked as pages for the security headers (`headers`) and never cached, the `{"success",
//! "error"?}` JSON of their calls, and the static assets.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, HttpResponseBuilder};
use serde::Serialize;

use super::headers::Page;

/// An answer of a page or of a page's call: the pages' security headers, never cached.
pub fn answer(status: StatusCode) -> HttpResponseBuilder {
    let mut res = HttpResponse::build(status);
    res.insert_header(("Cache-Control", "no-store"));
    res.extensions_mut().insert(Page);
    res
}

/// A CSS or JavaScript asset: revalidated before use.
pub fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok().content_type(content_type.to_string()).insert_header(("Cache-Control", "no-cache")).body(body)
}

pub fn html(status: StatusCode, body: impl Into<String>) -> HttpResponse {
    answer(status).content_type("text/html; charset=utf-8").body(body.into())
}

#[derive(Serialize)]
struct PageAnswer<'a> {
    success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// `{"success":true}`, or `{"success":false,"error":"..."}`.
pub fn json(status: StatusCode, error: Option<&str>) -> HttpResponse {
    let body = serde_json::to_string(&PageAnswer { success: error.is_none(), error }).unwrap_or_default();
    answer(status).content_type("application/json").body(body)
}

/// Text put in a template in one pass: a value is never read as a placeholder again.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() * 2);
    let mut rest = template;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        match after.find("}}").and_then(|j| values.iter().find(|(k, _)| *k == &after[..j]).map(|(_, v)| (j, v))) {
            Some((j, v)) => {
                out.push_str(v);
                rest = &after[j + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_never_read_as_a_placeholder() {
        let t = "<p>{{a}}</p><p>{{b}}</p>{{unknown}}";
        assert_eq!(fill(t, &[("a", "{{b}}"), ("b", "x")]), "<p>{{b}}</p><p>x</p>{{unknown}}");
    }
}
