//! A TCP proxy in front of PostgreSQL whose path can be cut in two ways:
//! frozen (connections stay open, nothing is forwarded: a stopped server
//! or a path that swallows packets) or refusing (new connections are
//! closed at once, open ones cut: a server that is down).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Mode {
    Forward = 0,
    Freeze = 1,
    Refuse = 2,
}

pub struct Proxy {
    pub port: u16,
    mode: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

fn mode_of(m: &AtomicU8) -> Mode {
    match m.load(Ordering::SeqCst) {
        0 => Mode::Forward,
        1 => Mode::Freeze,
        _ => Mode::Refuse,
    }
}

impl Proxy {
    /// A proxy on a free local port to `upstream` (host:port).
    pub fn start(upstream: &str, mode: Mode) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let p = Proxy {
            port,
            mode: Arc::new(AtomicU8::new(mode as u8)),
            stop: Arc::new(AtomicBool::new(false)),
            conns: Arc::default(),
        };
        let (m, stop, conns, up) = (
            p.mode.clone(),
            p.stop.clone(),
            p.conns.clone(),
            upstream.to_string(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let Ok((client, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = client.set_nonblocking(false);
                if mode_of(&m) == Mode::Refuse {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&up) else {
                    continue;
                };
                {
                    let mut c = conns.lock().unwrap();
                    c.push(client.try_clone().unwrap());
                    c.push(server.try_clone().unwrap());
                }
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let (m, stop) = (m.clone(), stop.clone());
                    std::thread::spawn(move || pump(from, to, &m, &stop));
                }
            }
        });
        p
    }

    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
        if mode == Mode::Refuse {
            self.cut();
        }
    }

    /// Cuts every open connection.
    pub fn cut(&self) {
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// `url` (postgres://…@host:port/db) through this proxy.
    pub fn url(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap();
        let (auth, path) = rest.split_once('/').unwrap_or((rest, ""));
        let user = auth.rsplit_once('@').map(|(u, _)| format!("{u}@"));
        format!(
            "{scheme}://{}127.0.0.1:{}/{path}",
            user.unwrap_or_default(),
            self.port
        )
    }
}

/// host:port of a postgres:// URL.
pub fn upstream_of(url: &str) -> String {
    let rest = url.split_once("://").unwrap().1;
    let auth = rest.split('/').next().unwrap();
    let hostport = auth.rsplit_once('@').map_or(auth, |(_, h)| h);
    if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:5432")
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, mode: &AtomicU8, stop: &AtomicBool) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = [0u8; 16384];
    while !stop.load(Ordering::SeqCst) {
        if mode_of(mode) == Mode::Freeze {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
    }
}
