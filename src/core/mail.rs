//! The outbox every dialect mails through.
//!
//! Every message is first written as an RFC 5322 file under `<data_dir>/outbox/` (written to a
//! temporary name, synced, then renamed, so a crash leaves a whole message or none). Without SMTP
//! configured that is where it stays, for an operator or another program to pick up. With SMTP
//! configured, a sender thread delivers the files in order and removes each only after the server
//! accepted it; a failed send is retried with a doubling wait, and a restart finds the files again.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{Address, Message, SmtpTransport, Transport};

use super::crypto::{hex, random_bytes};
use super::{internal, now_ms, Error};
use crate::config;

pub struct Outbox {
    dir: PathBuf,
    from: Mailbox,
    wake: (Mutex<bool>, Condvar),
    /// Bytes to leave free on the outbox's file system (`mail.min_free_mb`).
    reserve: u64,
}

/// Bytes an unprivileged writer may still use on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `st` a buffer statvfs fills on success.
    if unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    // u32 on 32-bit ARM targets, u64 here.
    #[allow(clippy::unnecessary_cast)]
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

impl Outbox {
    pub fn open(dir: PathBuf, from: &str) -> Result<Outbox, String> {
        crate::store::ensure_dir(&dir).map_err(|e| format!("outbox {}: {e}", dir.display()))?;
        let from = Mailbox::from_str(from).map_err(|e| format!("mail.from {from:?}: {e}"))?;
        Ok(Outbox { dir, from, wake: (Mutex::new(false), Condvar::new()), reserve: 0 })
    }

    /// Leaves `mib` MiB free on the outbox's file system: no message is written below it.
    pub fn with_reserve(self, mib: u64) -> Outbox {
        Outbox { reserve: mib.saturating_mul(1 << 20), ..self }
    }

    /// Ok when a message may be written without eating into the reserve; else `NoRoom`, logged.
    pub fn has_room(&self) -> Result<(), Error> {
        if self.reserve == 0 {
            return Ok(());
        }
        match free_bytes(&self.dir) {
            Some(free) if free < self.reserve => {
                log::warn!(
                    "outbox {}: {} MiB free on its disk, under the reserve of {} MiB (mail.min_free_mb): message not \
                     written; sign-ins and the database go on",
                    self.dir.display(),
                    free >> 20,
                    self.reserve >> 20
                );
                Err(Error::NoRoom)
            }
            _ => Ok(()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes one plain-text message to the outbox and wakes the sender.
    pub fn enqueue(&self, to: &str, subject: &str, body: &str) -> Result<PathBuf, Error> {
        let to = Mailbox::from_str(to).map_err(|_| Error::invalid("email", "is not an address mail can be sent to"))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(None)
            .singlepart(plain_body(body))
            .map_err(internal)?;
        let name = format!("{:013}-{}", now_ms(), hex(&random_bytes::<8>()));
        let path = self.write_atomically(&name, "eml", &message.formatted())?;
        let (lock, cvar) = &self.wake;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cvar.notify_all();
        Ok(path)
    }

    /// Writes a text message for a phone number to `<outbox>/sms/`, for an operator or an SMS
    /// gateway to pick up (no gateway is embedded; the mail sender leaves these alone).
    pub fn enqueue_sms(&self, number: &str, text: &str) -> Result<PathBuf, Error> {
        let sms = Outbox {
            dir: self.dir.join("sms"),
            from: self.from.clone(),
            wake: (Mutex::new(false), Condvar::new()),
            reserve: self.reserve,
        };
        crate::store::ensure_dir(&sms.dir).map_err(|e| internal(format!("outbox sms: {e}")))?;
        let date = super::iso8601(now_ms());
        let content =
            format!("To: {number}\r\nDate: {date}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n");
        let name = format!("{:013}-{}", now_ms(), hex(&random_bytes::<8>()));
        sms.write_atomically(&name, "sms", content.as_bytes())
    }

    /// Writes `<dir>/<name>.<ext>` whole or not at all, readable by its owner only.
    pub(crate) fn write_atomically(&self, name: &str, ext: &str, bytes: &[u8]) -> Result<PathBuf, Error> {
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let path = self.dir.join(format!("{name}.{ext}"));
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        self.has_room()?;
        let mut file = opts.open(&tmp).map_err(|e| internal(format!("outbox write: {e}")))?;
        // A write that fails half-way (a full disk) leaves nothing behind: no `.tmp` to fill it more.
        let written = file.write_all(bytes).and_then(|_| file.sync_all()).and_then(|_| fs::rename(&tmp, &path));
        if let Err(e) = written {
            drop(file);
            let _ = fs::remove_file(&tmp);
            return Err(internal(format!("outbox write: {e}")));
        }
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(path)
    }

    /// The messages waiting, oldest first.
    pub fn pending(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    /// Waits until a message is enqueued or `timeout` passes.
    fn wait(&self, timeout: Duration) {
        let (lock, cvar) = &self.wake;
        let mut woken = lock.lock().unwrap_or_else(|p| p.into_inner());
        if !*woken {
            woken = cvar.wait_timeout(woken, timeout).unwrap_or_else(|p| p.into_inner()).0;
        }
        *woken = false;
    }
}

/// A text body kept readable in the file, its links unbroken. lettre wraps 7bit bodies at 76
/// characters by switching to quoted-printable, which would split a link in two for anyone reading
/// the outbox file; RFC 5322 allows lines of up to 998, so ASCII text with lines that fit is sent
/// as 7bit as it is. Anything else gets lettre's own choice.
fn plain_body(text: &str) -> lettre::message::SinglePart {
    use lettre::message::header::ContentTransferEncoding;
    use lettre::message::{Body, SinglePart};
    let lines: Vec<&str> = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).collect();
    let fits = lines.iter().all(|l| l.len() <= 998 && l.bytes().all(|b| b.is_ascii() && b != 0 && b != b'\r'));
    let crlf = lines.join("\r\n");
    let body = if fits {
        Body::dangerous_pre_encoded(crlf.into_bytes(), ContentTransferEncoding::SevenBit)
    } else {
        Body::new(text.to_string())
    };
    SinglePart::builder().header(ContentType::TEXT_PLAIN).body(body)
}

/// The sender and recipient of a message file, read back from its headers.
fn envelope(raw: &[u8]) -> Option<Envelope> {
    let text = std::str::from_utf8(raw).ok()?;
    let head = text.split("\r\n\r\n").next()?;
    let header = |name: &str| {
        head.split("\r\n")
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
    };
    let addr = |v: &str| {
        let inner = v.rsplit_once('<').map(|(_, r)| r.trim_end_matches('>')).unwrap_or(v);
        Address::from_str(inner.trim()).ok()
    };
    Envelope::new(Some(addr(header("From")?)?), vec![addr(header("To")?)?]).ok()
}

fn transport(cfg: &config::Mail) -> Result<SmtpTransport, String> {
    let host = cfg.smtp_host.as_str();
    let builder = match cfg.smtp_security.as_str() {
        "tls" => SmtpTransport::relay(host).map_err(|e| e.to_string())?,
        "starttls" => SmtpTransport::starttls_relay(host).map_err(|e| e.to_string())?,
        _ => SmtpTransport::builder_dangerous(host),
    };
    let mut builder = builder.port(cfg.smtp_port).timeout(Some(Duration::from_secs(30)));
    if !cfg.smtp_username.is_empty() {
        builder = builder.credentials(Credentials::new(cfg.smtp_username.clone(), cfg.smtp_password.clone()));
    }
    Ok(builder.build())
}

/// Starts the sender thread when SMTP is configured. It stops when the outbox is dropped.
pub fn start_sender(outbox: &Arc<Outbox>, cfg: &config::Mail) {
    if cfg.smtp_host.is_empty() {
        log::info!("mail: no smtp_host, messages stay in {}", outbox.dir.display());
        return;
    }
    let smtp = match transport(cfg) {
        Ok(t) => t,
        Err(e) => {
            log::error!("mail: cannot set up SMTP to {}: {e}; messages stay in the outbox", cfg.smtp_host);
            return;
        }
    };
    let weak = Arc::downgrade(outbox);
    let (initial, max) = (cfg.retry_initial.0, cfg.retry_max.0);
    let host = cfg.smtp_host.clone();
    let spawned = std::thread::Builder::new().name("gatehouse-mail".into()).spawn(move || {
        send_loop(weak, &smtp, &host, initial, max);
    });
    if let Err(e) = spawned {
        log::error!("mail: cannot start the sender thread: {e}");
    }
}

fn send_loop(outbox: Weak<Outbox>, smtp: &SmtpTransport, host: &str, initial: Duration, max: Duration) {
    let mut backoff = initial;
    loop {
        let Some(ob) = outbox.upgrade() else { return };
        let mut failed = false;
        for path in ob.pending() {
            let Ok(raw) = fs::read(&path) else { continue };
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let Some(env) = envelope(&raw) else {
                log::error!("mail: {name} has no readable From and To; moved aside");
                let _ = fs::rename(&path, path.with_extension("unsendable"));
                continue;
            };
            match smtp.send_raw(&env, &raw) {
                Ok(_) => {
                    if let Err(e) = fs::remove_file(&path) {
                        log::error!("mail: {name} was sent but could not be removed: {e}");
                    }
                    log::info!("mail: {name} delivered to {host}");
                    backoff = initial;
                }
                Err(e) => {
                    log::warn!("mail: sending {name} to {host} failed ({e}); next try in {backoff:?}");
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            drop(ob);
            let until = Instant::now() + backoff;
            while Instant::now() < until {
                std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
                if outbox.strong_count() == 0 {
                    return;
                }
            }
            backoff = (backoff * 2).min(max);
        } else {
            ob.wait(Duration::from_secs(30).min(max));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_no_tmp_file_and_a_full_reserve_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let ob = Outbox::open(dir.path().join("outbox"), "gatehouse@box.example").unwrap();
        // The rename onto a directory fails after the bytes were written to the `.tmp` file.
        fs::create_dir(ob.dir().join("m.eml")).unwrap();
        assert!(ob.write_atomically("m", "eml", b"hello").is_err());
        let left: Vec<_> = fs::read_dir(ob.dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("m.eml")], "no .tmp left behind");

        // A reserve larger than any disk: nothing is written, mail or text message.
        let full = Outbox::open(dir.path().join("full"), "gatehouse@box.example").unwrap().with_reserve(u64::MAX >> 21);
        assert!(matches!(full.enqueue("alice@example.com", "s", "b"), Err(Error::NoRoom)));
        assert!(matches!(full.enqueue_sms("+15550100", "t"), Err(Error::NoRoom)));
        assert!(full.pending().is_empty());
        assert!(fs::read_dir(full.dir()).unwrap().all(|e| e.unwrap().path().is_dir()), "only the sms folder");
        // Room enough: written.
        let roomy = Outbox::open(dir.path().join("roomy"), "gatehouse@box.example").unwrap().with_reserve(1);
        assert!(roomy.enqueue("alice@example.com", "s", "b").is_ok());
    }

    #[test]
    fn a_message_is_an_rfc5322_file_and_its_envelope_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let ob = Outbox::open(dir.path().join("outbox"), "gatehouse@box.example").unwrap();
        let path = ob.enqueue("alice@example.com", "Réinitialiser", "Hello\nthere").unwrap();
        let raw = fs::read(&path).unwrap();
        let text = String::from_utf8(raw.clone()).unwrap();
        assert!(text.contains("To: alice@example.com\r\n"), "{text}");
        assert!(text.contains("From: gatehouse@box.example\r\n"));
        assert!(text.contains("Date: ") && text.contains("Message-ID: "));
        let env = envelope(&raw).unwrap();
        assert_eq!(env.to()[0].to_string(), "alice@example.com");
        assert_eq!(env.from().unwrap().to_string(), "gatehouse@box.example");
        assert_eq!(ob.pending(), vec![path]);
        let long = format!("Open https://box.example/reset/{}\nbye", "ab".repeat(32));
        let text = fs::read_to_string(ob.enqueue("bob@example.com", "Reset", &long).unwrap()).unwrap();
        assert!(text.contains(&format!("https://box.example/reset/{}\r\nbye", "ab".repeat(32))), "{text}");
        assert!(ob.enqueue("not an address", "s", "b").is_err());
    }
}
