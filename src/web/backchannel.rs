//! Back-channel logout delivery: the logout tokens the core queued (`core::backchannel`) POSTed
//! to each client's back-channel URI as `logout_token=...` (Back-Channel Logout 1.0 §2.5), a
//! 2xx answer being the only success; anything else is tried again later by the core's backoff.

use std::sync::Arc;
use std::time::Duration;

use crate::core::Core;

/// The client every delivery uses: rustls with the system's CA roots, short timeouts, no
/// redirects followed (a logout token goes where it was registered, nowhere else).
pub fn client() -> awc::Client {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth());
    let connector = match tls {
        Ok(config) => awc::Connector::new().rustls_0_23(Arc::new(config)),
        Err(e) => {
            log::warn!("back-channel logouts over HTTPS are off: {e}");
            awc::Connector::new()
        }
    };
    awc::Client::builder()
        .connector(connector.timeout(Duration::from_secs(5)))
        .timeout(Duration::from_secs(10))
        .disable_redirects()
        .finish()
}

/// Sends what is due now (a batch), and reports each outcome to the core.
pub async fn deliver_due(core: &Arc<Core>, client: &awc::Client) {
    let due = match core.call(|c| c.claim_logouts(16)).await {
        Ok(d) => d,
        Err(e) => {
            log::warn!("back-channel logouts not claimed: {e}");
            return;
        }
    };
    for d in due {
        let sent = client
            .post(&d.uri)
            .insert_header(("Cache-Control", "no-store"))
            .send_form(&[("logout_token", d.logout_token.as_str())])
            .await;
        let outcome = match sent {
            Ok(res) if res.status().is_success() => Ok(()),
            Ok(res) => Err(format!("answered {}", res.status())),
            Err(e) => Err(format!("not sent: {e}")),
        };
        let reported = match outcome {
            Ok(()) => core.call(move |c| c.logout_delivered(d.id)).await,
            Err(why) => core.call(move |c| c.logout_failed(&d, &why)).await,
        };
        if let Err(e) = reported {
            log::warn!("a back-channel logout's outcome was not recorded: {e}");
        }
    }
}
