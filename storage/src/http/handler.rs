//! One HTTP request, following M.2: parse the path, check the Referer and the token, decode
//! the name, serve the local file, else find it on a peer (redirect or proxy), else the
//! default image or 404.

use std::path::Path;
use std::sync::Arc;

use fdfs_proto::file_id::LogicalName;
use fdfs_proto::name::{classify, FileKind, NameFields};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tracing::{debug, error, warn};

use super::body::{self, Body};
use super::conditional::ETag;
use super::local::{self, Conditions, CrcCache, LocalFile, Lookup, Representation};
use super::path::{self, FileTarget, PathError, Target};
use super::peer::{self, Fetch, PeerClient};
use super::query::{self, Params, QueryError};
use super::settings::{HttpSettings, NotLocalMode, APPENDER_CACHE_CONTROL};
use super::{disposition, referer, token};
use crate::store::Store;
use crate::tracker_link::Members;

/// Everything requests share.
pub struct State {
    pub settings: HttpSettings,
    pub store: Arc<Store>,
    pub members: Arc<Members>,
    pub peers: PeerClient,
    pub crcs: Arc<CrcCache>,
    /// Serves `GET /metrics` when set.
    pub exporter: Option<Arc<crate::metrics::Exporter>>,
}

impl State {
    pub fn new(settings: HttpSettings, store: Arc<Store>, members: Arc<Members>) -> State {
        let peers = PeerClient::new(settings.network_timeout);
        State {
            settings,
            store,
            members,
            peers,
            crcs: Arc::new(CrcCache::default()),
            exporter: None,
        }
    }
}

/// Marks answers that are not the requested file.
const FALLBACK_HEADER: &str = "x-fdfs-fallback";

/// What a peer may ask of the HTTP port, from its address.
#[derive(Clone, Copy, Debug)]
pub struct Access {
    /// Files and `/healthz` (`http_allow_hosts`).
    pub files: bool,
    /// `/metrics` (`metrics_allow_hosts`).
    pub metrics: bool,
}

pub async fn handle<B>(state: Arc<State>, request: Request<B>, access: Access) -> Response<Body> {
    let started = std::time::Instant::now();
    let response = route(&state, &request, access).await;
    debug!(
        method = %request.method(),
        path = request.uri().path(),
        status = response.status().as_u16(),
        elapsed = ?started.elapsed(),
        "http request"
    );
    response
}

async fn route<B>(state: &State, request: &Request<B>, access: Access) -> Response<Body> {
    let method = request.method();
    if method != Method::GET && method != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    if let (Some(exporter), "/metrics") = (&state.exporter, request.uri().path()) {
        if !access.metrics {
            exporter.metrics.refused("metrics_allow_hosts");
            return refused();
        }
        let mut response = text(StatusCode::OK, &exporter.render().await);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        return response;
    }
    if !access.files {
        if let Some(exporter) = &state.exporter {
            exporter.metrics.refused("http_allow_hosts");
        }
        return refused();
    }
    let settings = &state.settings;
    let target = path::parse(
        request.uri().path(),
        settings.url_have_group_name,
        &settings.group,
        settings.max_path,
    );
    match target {
        Ok(Target::Healthz) => text(StatusCode::OK, "ok\n"),
        Ok(Target::File(file)) => serve_file(state, request, file).await,
        Err(err) => {
            debug!(path = request.uri().path(), error = %err, "bad request path");
            let status = match err {
                PathError::TooLong(_) => StatusCode::URI_TOO_LONG,
                PathError::NotFound | PathError::OtherGroup(_) => StatusCode::NOT_FOUND,
                PathError::BadEncoding
                | PathError::EncodedSeparator
                | PathError::Traversal
                | PathError::BadName(_) => StatusCode::BAD_REQUEST,
            };
            text(status, &format!("{err}\n"))
        }
    }
}

/// The answer to a peer outside the HTTP allow list; the connection closes after it.
pub fn forbidden() -> Response<Body> {
    let mut response = text(StatusCode::FORBIDDEN, "host not allowed\n");
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The answer to a request the peer's address does not allow, from a peer allowed
/// something else on this port: the connection stays open.
fn refused() -> Response<Body> {
    text(StatusCode::FORBIDDEN, "host not allowed\n")
}

fn text(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = Response::new(body::full(message.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn conditions<B>(request: &Request<B>) -> Conditions {
    let headers = request.headers();
    Conditions {
        head: request.method() == Method::HEAD,
        range: header_text(headers, header::RANGE),
        if_range: header_text(headers, header::IF_RANGE),
        if_none_match: header_text(headers, header::IF_NONE_MATCH),
        if_modified_since: header_text(headers, header::IF_MODIFIED_SINCE),
    }
}

fn unix_now() -> u64 {
    crate::clock::unix_now() as u64
}

async fn serve_file<B>(state: &State, request: &Request<B>, target: FileTarget) -> Response<Body> {
    let settings = &state.settings;
    let params = match query::parse(request.uri().query()) {
        Ok(params) => params,
        Err(err @ QueryError::TooLong) => {
            return text(StatusCode::URI_TOO_LONG, &format!("{err}\n"))
        }
        Err(err) => return text(StatusCode::BAD_REQUEST, &format!("{err}\n")),
    };
    let referer = request
        .headers()
        .get(header::REFERER)
        .map(|v| v.to_str().unwrap_or(""));
    if !referer::allowed(&settings.referer_allow, referer) {
        debug!(referer = ?referer, "referer not allowed");
        return text(StatusCode::FORBIDDEN, "referer not allowed\n");
    }
    if let Some(policy) = &settings.anti_steal {
        let group = target.group.as_deref().unwrap_or(&settings.group);
        let with_group = format!("{group}/{}", target.name_text);
        if let Err(err) = token::check(
            policy,
            unix_now(),
            &with_group,
            &target.name_text,
            params.token.as_deref(),
            params.ts.as_deref(),
        ) {
            debug!(name = %target.name_text, error = %err, "token check failed");
            if err == token::TokenError::Missing {
                return text(StatusCode::BAD_REQUEST, "token and ts required\n");
            }
            return match &settings.token_check_fail {
                Some(path) => fallback(state, request, path, "token-check-fail").await,
                None => text(StatusCode::BAD_REQUEST, &format!("{err}\n")),
            };
        }
    }
    // M.2 step 3: the name must decode locally
    let fields = match Store::name_fields(&target.name) {
        Ok(fields) => fields,
        Err(err) => return text(StatusCode::BAD_REQUEST, &format!("{err}\n")),
    };
    let path = match state.store.resolve(&target.name) {
        Ok(path) => path,
        Err(err) => return text(StatusCode::BAD_REQUEST, &format!("{err}\n")),
    };
    let kind = classify(&target.name.to_string(), &fields);
    let cond = conditions(request);
    // HEAD too: its ETag must be the one GET gives
    let want_crc = kind == FileKind::Slave;
    match open_local(state, target.name.store_path(), &path, !cond.head, want_crc).await {
        // a normal file's name records its size: another size on disk is damage (repaired by
        // a scrub or a DOWNLOAD_FILE of it), not content to send — unless it is a slave
        // shaped like a normal name (H.8), whose name carries its master's size
        Ok(Lookup::Found(file)) if kind == FileKind::Normal && file.size != fields.file_size() => {
            if state.store.beside_its_master(&target.name).await {
                let rep = representation(
                    settings,
                    &target.name,
                    &fields,
                    FileKind::Slave,
                    &file,
                    &params,
                );
                return local::respond(&cond, file, rep);
            }
            error!(name = %target.name, on_disk = file.size, recorded = fields.file_size(), "damaged file: size differs from its name, not served");
            text(StatusCode::INTERNAL_SERVER_ERROR, "damaged file\n")
        }
        Ok(Lookup::Found(file)) => {
            let rep = representation(settings, &target.name, &fields, kind, &file, &params);
            local::respond(&cond, file, rep)
        }
        Ok(Lookup::Refused) => text(StatusCode::NOT_FOUND, "not found\n"),
        Ok(Lookup::Missing) => not_local(state, request, &fields, &params).await,
        Err(err) if err.kind() == std::io::ErrorKind::ResourceBusy => {
            warn!(name = %target.name, error = %err, "store path busy");
            text(StatusCode::SERVICE_UNAVAILABLE, "store path busy\n")
        }
        Err(err) => {
            warn!(name = %target.name, error = %err, "cannot read file");
            text(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the file\n")
        }
    }
}

/// Opens a stored file (`<store>/data/XX/YY/name`) and loads what the answer needs.
async fn open_local(
    state: &State,
    index: u8,
    path: &Path,
    read_small: bool,
    want_crc: bool,
) -> std::io::Result<Lookup> {
    // links may not leave <store>/data, three levels up
    let data_root = path
        .ancestors()
        .nth(3)
        .unwrap_or(Path::new("/"))
        .to_path_buf();
    // on the blocking pool: an open that has to wait for a disk that hangs must not hold a
    // thread that serves connections, and holding a slot of its store path (store::gate), so
    // a hung path cannot take every pool thread (tests/integration/faults.rs)
    let busy = |err: crate::store::StoreError| {
        std::io::Error::new(std::io::ErrorKind::ResourceBusy, err.to_string())
    };
    let slot = state.store.io_slot(index).await.map_err(busy)?;
    let file = path.to_path_buf();
    let mut lookup = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        local::open(&file, &data_root)
    })
    .await
    .unwrap_or_else(|err| Err(std::io::Error::other(err)))?;
    if let Lookup::Found(file) = &mut lookup {
        // its reads finish before it returns: the slot covers them
        let _slot = state.store.io_slot(index).await.map_err(busy)?;
        file.load(read_small, want_crc, &state.crcs).await?;
    }
    Ok(lookup)
}

/// Validators and headers of a stored file (see `conditional` for the ETag rules).
fn representation(
    settings: &HttpSettings,
    name: &LogicalName,
    fields: &NameFields,
    kind: FileKind,
    file: &LocalFile,
    params: &Params,
) -> Representation {
    let (etag, last_modified) = match kind {
        FileKind::Normal | FileKind::Trunk => (
            ETag::from_crc(fields.crc32, file.size),
            u64::from(fields.timestamp),
        ),
        FileKind::Slave => (
            file.crc.map_or_else(
                || ETag::from_stat(file.size, file.mtime),
                |crc| ETag::from_crc(crc, file.size),
            ),
            file.mtime,
        ),
        FileKind::Appender => (ETag::from_stat(file.size, file.mtime), file.mtime),
    };
    let cache_control = if kind == FileKind::Appender {
        HeaderValue::from_static(APPENDER_CACHE_CONTROL)
    } else {
        settings.cache_control.clone()
    };
    Representation {
        etag: Some(etag),
        last_modified: Some(last_modified),
        content_type: settings.mime.lookup(name.base()).clone(),
        cache_control,
        disposition: params.filename.as_deref().and_then(disposition::attachment),
    }
}

/// M.2 step 5: the file is not here.
async fn not_local<B>(
    state: &State,
    request: &Request<B>,
    fields: &NameFields,
    params: &Params,
) -> Response<Body> {
    if params.redirect {
        // another storage sent the client here: do not bounce it again
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    let members = state.members.all();
    let plan = peer::plan(&state.settings, fields.source, &members);
    if plan.source_is_self {
        // created here and gone: deleted
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    let path_and_query = format!(
        "{}?{}",
        request.uri().path(),
        query::with_redirect(request.uri().query())
    );
    let mut source_said_missing = false;
    for candidate in &plan.candidates {
        match state.settings.not_local {
            NotLocalMode::Redirect => {
                if !candidate.is_source {
                    // only the source surely has it: ask the others before sending a client
                    let probe = state
                        .peers
                        .fetch(&candidate.addr, &Method::HEAD, &path_and_query, None)
                        .await;
                    match probe {
                        Fetch::Answer(_) => {}
                        Fetch::NotFound | Fetch::Unreachable => continue,
                    }
                }
                return redirect(&candidate.addr, &path_and_query);
            }
            NotLocalMode::Proxy => {
                let fetched = state
                    .peers
                    .fetch(
                        &candidate.addr,
                        request.method(),
                        &path_and_query,
                        Some(request.headers()),
                    )
                    .await;
                match fetched {
                    Fetch::Answer(response) => {
                        debug!(peer = %candidate.id, "proxying from peer");
                        return state.peers.relay(response);
                    }
                    Fetch::NotFound if candidate.is_source => source_said_missing = true,
                    Fetch::NotFound | Fetch::Unreachable => {}
                }
            }
        }
    }
    if source_said_missing {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    match &state.settings.default_image {
        Some(path) => fallback(state, request, path, "default-image").await,
        None => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn redirect(addr: &str, path_and_query: &str) -> Response<Body> {
    let location = format!("http://{addr}{path_and_query}");
    let mut response = text(StatusCode::FOUND, "found elsewhere\n");
    match HeaderValue::from_str(&location) {
        Ok(value) => {
            response.headers_mut().insert(header::LOCATION, value);
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "bad peer address\n"),
    }
}

/// Serves a configured stand-in file (default image, token failure image) with 200, never
/// cached, marked with `X-Fdfs-Fallback`.
async fn fallback<B>(
    state: &State,
    request: &Request<B>,
    path: &Path,
    what: &'static str,
) -> Response<Body> {
    let cond = Conditions {
        head: request.method() == Method::HEAD,
        ..Conditions::default()
    };
    let configured = path.to_path_buf();
    let opened = tokio::task::spawn_blocking(move || {
        // the operator's file may be a link anywhere: resolve it first
        let real = std::fs::canonicalize(&configured)?;
        let root = real.parent().map(Path::to_path_buf).unwrap_or_default();
        local::open(&real, &root)
    })
    .await
    .unwrap_or_else(|err| Err(std::io::Error::other(err)));
    let opened = match opened {
        Ok(Lookup::Found(mut file)) => file
            .load(true, false, &state.crcs)
            .await
            .map(|()| Lookup::Found(file)),
        other => other,
    };
    match opened {
        Ok(Lookup::Found(file)) => {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let rep = Representation {
                etag: None,
                last_modified: None,
                content_type: state.settings.mime.lookup(name).clone(),
                cache_control: HeaderValue::from_static("no-store"),
                disposition: None,
            };
            let mut response = local::respond(&cond, file, rep);
            response
                .headers_mut()
                .insert(FALLBACK_HEADER, HeaderValue::from_static(what));
            response
        }
        other => {
            warn!(path = %path.display(), result = ?other.map(|_| ()), "cannot serve the {what} file");
            text(StatusCode::NOT_FOUND, "not found\n")
        }
    }
}
