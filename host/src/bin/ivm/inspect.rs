//! `--inspect`, `--inspect-brk`, `--cpu-prof` and `--heap-snapshot`: what `node --inspect`
//! serves to DevTools clients (`GET /json`, `/json/list`, `/json/version` and the WebSocket
//! of the isolate's inspector), and the profile and snapshot files written when the script
//! ends.

use std::io::{BufWriter, Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use ivm::{Error, InspectorSession, Isolate};
use tungstenite::Message;

/// The default address, as Node's.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:9229";
/// Connections served at once.
const MAX_CLIENTS: usize = 16;

/// What the command line asked for.
#[derive(Default)]
pub struct Debugging {
    /// `--inspect[-brk][=HOST:PORT]`: the address, and whether to wait for a debugger and
    /// pause before the first statement.
    pub inspect: Option<(String, bool)>,
    pub cpu_prof: Option<PathBuf>,
    pub heap_snapshot: Option<PathBuf>,
}

impl Debugging {
    pub fn wants_inspector(&self) -> bool {
        self.inspect.is_some()
    }

    /// Before the script runs: serves the inspector (and with `--inspect-brk` waits for a
    /// debugger), starts the profiler.
    pub fn start(&self, isolate: &Isolate, filename: &str) -> Result<(), Error> {
        if let Some((address, brk)) = &self.inspect {
            serve(isolate, address, filename).map_err(|e| Error::InvalidArgument(format!("cannot listen on {address}: {e}")))?;
            if *brk {
                isolate.wait_for_debugger()?;
            }
        }
        if self.cpu_prof.is_some() {
            isolate.start_cpu_profiler("ivm")?;
        }
        Ok(())
    }

    /// After the script: writes the profile and the heap snapshot.
    pub fn finish(&self, isolate: &Isolate) -> Result<(), Error> {
        let cannot = |path: &PathBuf, e: &dyn std::fmt::Display| Error::InvalidArgument(format!("cannot write {}: {e}", path.display()));
        if let Some(path) = &self.cpu_prof {
            let profile = isolate.stop_cpu_profiler("ivm")?.into_iter().next().map(|p| p.profile);
            let file = std::fs::File::create(path).map_err(|e| cannot(path, &e))?;
            serde_json::to_writer(BufWriter::new(file), &profile).map_err(|e| cannot(path, &e))?;
        }
        if let Some(path) = &self.heap_snapshot {
            let file = std::fs::File::create(path).map_err(|e| cannot(path, &e))?;
            isolate.heap_snapshot(BufWriter::new(file))?;
        }
        Ok(())
    }
}

/// `HOST:PORT` with an IP address or `localhost` as the host. Names are not looked up: the
/// static `ivm` would need the C library's name services (NSS) for that, and a debugger is
/// served on this machine's own addresses anyway.
fn listen_address(address: &str) -> std::io::Result<std::net::SocketAddr> {
    if let Ok(address) = address.parse() {
        return Ok(address);
    }
    match address.strip_prefix("localhost:").map(str::parse::<u16>) {
        Some(Ok(port)) => Ok((std::net::Ipv4Addr::LOCALHOST, port).into()),
        _ => Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "HOST:PORT takes an IP address or localhost as the host")),
    }
}

/// Listens on `address` and serves DevTools clients on threads of their own; says where on
/// standard error, as `node --inspect` does.
fn serve(isolate: &Isolate, address: &str, filename: &str) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen_address(address)?)?;
    let local = listener.local_addr()?;
    let id = target_id();
    eprintln!("Debugger listening on ws://{local}/{id}\nFor help, see: https://nodejs.org/en/docs/inspector");
    let target = Target { host: local.to_string(), id, filename: filename.to_owned() };
    let isolate = isolate.clone();
    let clients = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    std::thread::Builder::new().name("ivm-inspect".into()).spawn(move || {
        for stream in listener.incoming().flatten() {
            // A few debuggers at a time; more connections are closed at once.
            if clients.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= MAX_CLIENTS {
                clients.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                continue;
            }
            let (isolate, target, served) = (isolate.clone(), target.clone(), clients.clone());
            let spawned = std::thread::Builder::new().name("ivm-inspect-client".into()).spawn(move || {
                let _ = client(stream, &isolate, &target);
                served.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            });
            if spawned.is_err() {
                clients.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    })?;
    Ok(())
}

#[derive(Clone)]
struct Target {
    /// `HOST:PORT` as listened on.
    host: String,
    id: String,
    filename: String,
}

impl Target {
    /// The target list of `/json` and `/json/list`, in Node's fields.
    fn list(&self) -> serde_json::Value {
        let ws = format!("{}/{}", self.host, self.id);
        serde_json::json!([{
            "description": "ivm instance",
            "devtoolsFrontendUrl": format!("devtools://devtools/bundled/js_app.html?experiments=true&v8only=true&ws={ws}"),
            "devtoolsFrontendUrlCompat": format!("devtools://devtools/bundled/inspector.html?experiments=true&v8only=true&ws={ws}"),
            "id": self.id,
            "title": format!("ivm[{}]", std::process::id()),
            "type": "node",
            "url": self.filename,
            "webSocketDebuggerUrl": format!("ws://{ws}"),
        }])
    }
}

/// A random target id in a UUID's form, as Node's.
fn target_id() -> String {
    let bytes = ivm::CacheKey::generate_secret().unwrap_or_default();
    let hex: String = bytes[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// One client connection: a JSON request, or the WebSocket of an inspector session.
fn client(stream: TcpStream, isolate: &Isolate, target: &Target) -> std::io::Result<()> {
    let head = peek_head(&stream)?;
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    if !matches!(request.parse(&head), Ok(httparse::Status::Complete(_))) {
        return respond(stream, "400 Bad Request", "text/plain", "Bad request");
    }
    let header = |name: &str| request.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| String::from_utf8_lossy(h.value).into_owned());
    // DNS rebinding: a page of another site must not reach the debugger through a name that
    // resolves here.
    if header("host").is_some_and(|host| !allowed_host(&host)) {
        return respond(stream, "400 Bad Request", "text/plain", "Host header is specified and is not an IP address or localhost.");
    }
    let path = request.path.unwrap_or("/").split('?').next().unwrap_or("/").trim_end_matches('/').to_owned();
    let upgrade = header("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    match path.as_str() {
        _ if upgrade && path == format!("/{}", target.id) => websocket(stream, isolate),
        "/json" | "/json/list" => respond(stream, "200 OK", "application/json; charset=UTF-8", &target.list().to_string()),
        "/json/version" => {
            let version = serde_json::json!({ "Browser": format!("ivm/{}", env!("CARGO_PKG_VERSION")), "Protocol-Version": "1.3", "V8-Version": ivm::v8_version() });
            respond(stream, "200 OK", "application/json; charset=UTF-8", &version.to_string())
        }
        _ => respond(stream, "404 Not Found", "text/plain", "Not found"),
    }
}

/// The request's head, left in the stream (the WebSocket handshake reads it again).
fn peek_head(stream: &TcpStream) -> std::io::Result<Vec<u8>> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    // `peek` returns at once while part of the request is there: the deadline is ours.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let mut buffer = vec![0u8; 16 << 10];
    loop {
        if std::time::Instant::now() > until {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        let n = stream.peek(&mut buffer)?;
        if let Some(end) = buffer[..n].windows(4).position(|w| w == b"\r\n\r\n") {
            buffer.truncate(end + 4);
            return Ok(buffer);
        }
        if n == 0 || n == buffer.len() {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether a `Host` header names this machine by address or as `localhost` (with any port).
fn allowed_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, port)| if port.chars().all(|c| c.is_ascii_digit()) { name } else { host }),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok()
}

fn respond(mut stream: TcpStream, status: &str, content_type: &str, body: &str) -> std::io::Result<()> {
    // The request is read (it was only peeked) so the client sees an orderly close.
    let mut head = [0u8; 16 << 10];
    stream.set_read_timeout(Some(Duration::from_millis(100)))?;
    let _ = stream.read(&mut head);
    write!(stream, "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())?;
    stream.flush()
}

/// A DevTools client on the WebSocket: its messages to a session of the isolate's inspector,
/// and the session's to it.
fn websocket(stream: TcpStream, isolate: &Isolate) -> std::io::Result<()> {
    stream.set_read_timeout(None)?;
    let mut socket = tungstenite::accept(stream).map_err(std::io::Error::other)?;
    let session = match isolate.inspector_session() {
        Ok(session) => session,
        Err(e) => {
            let _ = socket.close(None);
            return Err(std::io::Error::other(e.to_string()));
        }
    };
    eprintln!("Debugger attached.");
    // Reads wait briefly, so that one thread both reads the client and forwards the session's
    // messages.
    socket.get_ref().set_read_timeout(Some(Duration::from_millis(5)))?;
    // A client that stops reading is let go rather than let hold its session.
    socket.get_ref().set_write_timeout(Some(Duration::from_secs(10)))?;
    loop {
        if !forward(&session, &mut socket) {
            break;
        }
        match socket.read() {
            Ok(Message::Text(text)) => {
                if session.dispatch(text.as_str()).is_err() {
                    break;
                }
            }
            Ok(Message::Close(_)) => break,
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = socket.close(None);
    Ok(())
}

/// Sends the session's messages to the client; `false` once either has gone.
fn forward(session: &InspectorSession, socket: &mut tungstenite::WebSocket<TcpStream>) -> bool {
    while let Some(message) = session.try_recv() {
        if socket.send(Message::text(message)).is_err() {
            return false;
        }
    }
    true
}
