//! `GET /dashboard`: the PCN dashboard page, and its script. Both are
//! static and carry no data, so they are open like `/metadata`; the script
//! reads `/dashboard/metrics` with the bearer token the user gives it, and
//! every figure is checked against that token there. Shipped inside the
//! binary: nothing is loaded from elsewhere, and the Content-Security-Policy
//! says so to the browser.

use actix_web::HttpResponse;

const PAGE: &str = include_str!("../../assets/dashboard.html");
const SCRIPT: &str = include_str!("../../assets/dashboard.js");

/// Only this server's own script and data; no frames, forms posted
/// elsewhere or plug-ins.
const CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; \
                   style-src 'unsafe-inline'; img-src 'self' blob:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("Content-Security-Policy", CSP))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .insert_header(("Cache-Control", "no-cache"))
        .body(body)
}

pub async fn dashboard() -> HttpResponse {
    asset("text/html; charset=utf-8", PAGE)
}

pub async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}
