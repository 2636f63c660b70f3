//! The PCN dashboard page in a real browser: headless Chromium (Debian's
//! `chromium`, which tests/run.sh installs when it is missing) opens
//! `/dashboard` on the example PCN with a PCN client's token in the URL
//! fragment, runs the page's own script against `/dashboard/metrics`, and
//! the test checks what it drew; then it saves a screenshot
//! (`target/dashboard.png`, the picture the README shows).

mod common;

use common::*;

const SCOPE: &str = "system/*.rs";

fn chromium(args: &[&str]) -> std::process::Output {
    std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            // The page's fetches finish within this much virtual time.
            "--virtual-time-budget=15000",
        ])
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run chromium ({e}); tests/run.sh installs it (Debian package chromium)")
        })
}

/// The page draws a chart with data for every figure family, shows no
/// error, and never puts the token in a request the server sees.
#[tokio::test]
async fn dashboard_page_draws_the_figures_in_headless_chromium() {
    let s = Server::start_with(Backend::Sqlite, &["--demo"], &[]).await;
    let pcn = s
        .register("pcn-manager", "Organization/org-pcn", "pcn", SCOPE)
        .await;
    let token = s.token_for(&pcn, SCOPE).await;
    let page = s.url(&format!("/dashboard#token={token}"));

    // The page itself is open and static; its data needs the token.
    let anon = s.anonymous();
    let resp = anon.get("/dashboard").await;
    assert_eq!(resp.status().as_u16(), 200);
    let csp = header(&resp, "content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
    assert_eq!(anon.status_of("/dashboard/metrics").await, 401);

    let out = chromium(&["--dump-dom", &page]);
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !dom.contains("class=\"error\""),
        "the page shows an error: {dom}"
    );
    let rendered: usize = dom
        .split("data-rendered=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the page did not finish drawing: {dom}"));
    assert!(rendered >= 10, "only {rendered} bars drawn: {dom}");
    let metrics = s.with_token(&token).get_ok("/dashboard/metrics").await;
    for family in metrics["figures"].as_object().expect("figures").keys() {
        assert!(
            dom.contains(&format!("data-figure=\"{family}\"")),
            "figure {family} not drawn"
        );
    }
    // The token travelled in the fragment and the Authorization header
    // only: no request the server logged carries it.
    assert!(
        !s.log().contains(&token),
        "the token reached the server log"
    );

    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let arg = format!("--screenshot={}", shot.display());
    let out = chromium(&[&arg, "--window-size=1280,3150", &page]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).expect("a screenshot was written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real picture"
    );
}
