//! [`DirLoader`]: a module resolver that can read one directory and nothing else.
//!
//! It holds a directory capability (a cap-std `Dir`), so the guarantee comes from the
//! operating system's view of that directory, not from string checks alone: `..` that climbs
//! out of the root, absolute host paths and symlinks that point outside are all refused.
//! Modules see virtual filenames (`file:///lib/util.mjs`, rooted at the directory), never the
//! host's paths.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::Path;

use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};

use super::Module;
use crate::data::{CompileOptions, ImportRequest, ScriptOrigin};
use crate::error::{Error, Result};
use crate::isolate::Isolate;
use crate::sync::Mutex;

const SCHEME: &str = "file:///";

/// Loads modules from one directory (and host-registered built-in modules), for
/// [`Module::instantiate`] and [`Isolate::set_dynamic_import`].
///
/// - `./x.mjs`, `../x.mjs` resolve against the importing module; `/x.mjs` and `file:///x.mjs`
///   against the root. Nothing outside the root can be named or reached through a symlink.
/// - A bare specifier (`lodash`) names a built-in module the host registered with
///   [`builtin`](DirLoader::builtin) or [`builtin_data`](DirLoader::builtin_data).
/// - `import data from './x.json' with { type: 'json' }` loads a JSON module.
/// - Each file is compiled once per isolate: importing it twice gives the same module.
/// - Only regular files are read (not FIFOs or devices, which could block or never end), of
///   at most [`max_file_size`](DirLoader::max_file_size) bytes (default 64 MB).
///
/// ```no_run
/// use ivm::{DirLoader, Isolate};
/// let isolate = Isolate::new(Default::default())?;
/// let context = isolate.create_context()?;
/// let loader = DirLoader::open("./app")?;
/// loader.builtin_data(&isolate, "config", serde_json::json!({ "default": { "debug": true } }))?;
/// let main = loader.load(&isolate, "main.mjs")?;
/// main.instantiate(&context, |request, referrer| loader.resolve(&isolate, request, referrer.filename()))?;
/// main.evaluate(&Default::default())?;
/// # Ok::<(), ivm::Error>(())
/// ```
pub struct DirLoader {
    root: Dir,
    modules: Mutex<HashMap<(String, Kind), Module>>,
    max_file_size: u64,
}

/// The default of [`DirLoader::max_file_size`].
const MAX_FILE_SIZE: u64 = 64 << 20;

/// How a file is made into a module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    JavaScript,
    Json,
    Builtin,
}

impl std::fmt::Debug for DirLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirLoader").finish_non_exhaustive()
    }
}

impl DirLoader {
    /// A loader for the directory at `path` (opened now; the loader holds it open).
    pub fn open(path: impl AsRef<Path>) -> Result<DirLoader> {
        let path = path.as_ref();
        let root = Dir::open_ambient_dir(path, ambient_authority())
            .map_err(|e| Error::InvalidArgument(format!("cannot open the module directory {}: {e}", path.display())))?;
        Ok(DirLoader::new(root))
    }

    /// A loader for a directory capability the host already holds.
    pub fn new(root: Dir) -> DirLoader {
        DirLoader { root, modules: Mutex::default(), max_file_size: MAX_FILE_SIZE }
    }

    /// Refuses files longer than `bytes` (default 64 MB).
    pub fn max_file_size(mut self, bytes: u64) -> DirLoader {
        self.max_file_size = bytes;
        self
    }

    /// Registers a built-in module `name` from JavaScript source.
    pub fn builtin(&self, isolate: &Isolate, name: &str, source: &str) -> Result<()> {
        let module = isolate.compile_module(source, &CompileOptions::origin(ScriptOrigin::new(format!("builtin:{name}"))))?;
        self.remember(name, Kind::Builtin, module);
        Ok(())
    }

    /// Registers a built-in module `name` whose exports are Rust data (see
    /// [`Isolate::data_module`]).
    pub fn builtin_data(&self, isolate: &Isolate, name: &str, exports: impl serde::Serialize) -> Result<()> {
        let module = isolate.data_module(&format!("builtin:{name}"), exports)?;
        self.remember(name, Kind::Builtin, module);
        Ok(())
    }

    /// Uses `module` for the file at `path` (relative to the root) from now on, e.g. one
    /// compiled with a code cache.
    pub fn preload(&self, path: &str, module: Module) {
        if let Some(path) = normalize("", path) {
            self.remember(&path, Kind::JavaScript, module);
        }
    }

    /// The module at `path` (relative to the root), e.g. the entry point.
    pub fn load(&self, isolate: &Isolate, path: &str) -> Result<Module> {
        self.resolve(isolate, &ImportRequest { specifier: format!("/{path}"), attributes: Vec::new() }, SCHEME)
    }

    /// The module `request` names when imported by the module with filename `referrer`: the
    /// resolver for [`Module::instantiate`] (`|request, referrer| loader.resolve(&isolate,
    /// request, referrer.filename())`) and for [`Isolate::set_dynamic_import`].
    pub fn resolve(&self, isolate: &Isolate, request: &ImportRequest, referrer: &str) -> Result<Module> {
        let kind = match request.attribute("type") {
            None => Kind::JavaScript,
            Some("json") => Kind::Json,
            Some(other) => return Err(Error::js("TypeError", format!("Cannot import '{}': unknown module type '{other}'", request.specifier))),
        };
        let specifier = request.specifier.as_str();
        let path = if let Some(rooted) = specifier.strip_prefix(SCHEME).or_else(|| specifier.strip_prefix('/')) {
            normalize("", rooted)
        } else if specifier.starts_with("./") || specifier.starts_with("../") {
            let base = referrer.strip_prefix(SCHEME).map_or("", |path| path.rsplit_once('/').map_or("", |(dir, _)| dir));
            normalize(base, specifier)
        } else {
            return self
                .find(specifier, Kind::Builtin, isolate)
                .ok_or_else(|| Error::js("Error", format!("Cannot find module '{specifier}' imported from {referrer} (bare specifiers name built-in modules)")));
        }
        .ok_or_else(|| Error::js("Error", format!("Cannot import '{specifier}' from {referrer}: it is outside the module root")))?;
        if let Some(module) = self.find(&path, kind, isolate) {
            return Ok(module);
        }
        let source = self.read(&path).map_err(|e| read_error(&e, specifier, referrer))?;
        let filename = format!("{SCHEME}{path}");
        let module = match kind {
            Kind::Json => isolate.json_module(&filename, &source)?,
            _ => isolate.compile_module(&source, &CompileOptions::origin(ScriptOrigin::new(filename)))?,
        };
        self.remember(&path, kind, module.clone());
        Ok(module)
    }

    /// The text of the regular file at `path`, if it is no longer than the limit.
    fn read(&self, path: &str) -> io::Result<String> {
        let mut options = OpenOptions::new();
        // Opening a FIFO would wait for a writer.
        options.read(true).custom_flags(libc::O_NONBLOCK);
        let file = self.root.open_with(path, &options)?;
        let metadata = file.metadata()?;
        if !metadata.is_file() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "it is not a regular file"));
        }
        let too_large = || io::Error::new(io::ErrorKind::FileTooLarge, format!("it is larger than {} bytes", self.max_file_size));
        if metadata.len() > self.max_file_size {
            return Err(too_large());
        }
        let mut text = String::new();
        // A file that grows meanwhile is read no further than the limit.
        file.take(self.max_file_size + 1).read_to_string(&mut text)?;
        if text.len() as u64 > self.max_file_size {
            return Err(too_large());
        }
        Ok(text)
    }

    fn find(&self, path: &str, kind: Kind, isolate: &Isolate) -> Option<Module> {
        let modules = self.modules.lock();
        modules.get(&(path.to_owned(), kind)).filter(|m| m.isolate().same(isolate)).cloned()
    }

    fn remember(&self, path: &str, kind: Kind, module: Module) {
        self.modules.lock().insert((path.to_owned(), kind), module);
    }
}

/// `relative` joined to `base` (both `/`-separated, within the root), with `.` and `..`
/// resolved; `None` if it climbs out of the root.
fn normalize(base: &str, relative: &str) -> Option<String> {
    let mut parts: Vec<&str> = base.split('/').filter(|p| !p.is_empty()).collect();
    for part in relative.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    Some(parts.join("/"))
}

fn read_error(error: &io::Error, specifier: &str, referrer: &str) -> Error {
    let why = match error.kind() {
        io::ErrorKind::NotFound => return Error::js("Error", format!("Cannot find module '{specifier}' imported from {referrer}")),
        // cap-std refuses paths that leave the directory, symlinks included.
        io::ErrorKind::PermissionDenied => "it is outside the module root".to_owned(),
        _ => error.to_string(),
    };
    Error::js("Error", format!("Cannot import '{specifier}' from {referrer}: {why}"))
}
