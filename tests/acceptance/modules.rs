//! ES modules (reference §1.2 `Module`; isolated-vm tests module-basic.js, module-meta.js,
//! module-resolve-throws.js, module-throws.js), and what isolated-vm lacks: JSON and data
//! modules, dynamic `import()`, a loader confined to one directory.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ivm::{CompileOptions, DirLoader, Error, EvalOptions, ImportRequest, Module, ScriptOrigin};

use crate::new_context;

fn named(filename: &str) -> CompileOptions {
    CompileOptions::origin(ScriptOrigin::new(filename))
}

fn by_name<'a>(modules: &'a [(&'a str, Module)]) -> impl FnMut(&ImportRequest, &Module) -> ivm::Result<Module> + 'a {
    move |request, _| {
        modules
            .iter()
            .find(|(name, _)| *name == request.specifier)
            .map(|(_, m)| m.clone())
            .ok_or_else(|| Error::js("Error", format!("no module {}", request.specifier)))
    }
}

#[test]
fn modules_link_evaluate_and_expose_live_bindings() {
    // isolated-vm: tests/module-basic.js
    let (isolate, context) = new_context();
    let counter = isolate.compile_module("export let count = 0; export function bump() { count++ }", &named("counter.mjs")).unwrap();
    let main = isolate
        .compile_module("import { count, bump } from './counter.mjs'; import * as again from './counter.mjs'; bump(); export const seen = count;", &named("main.mjs"))
        .unwrap();
    // One request per distinct import, as V8 lists them.
    assert_eq!(main.dependency_specifiers(), ["./counter.mjs"]);
    let modules = [("./counter.mjs", counter.clone())];
    main.instantiate(&context, by_name(&modules)).unwrap();
    main.evaluate(&EvalOptions::default()).unwrap();
    assert_eq!(main.namespace().unwrap().get::<u32>("seen").unwrap(), 1);
    // The namespace's bindings are live.
    let namespace = counter.namespace().unwrap();
    assert_eq!(namespace.get::<u32>("count").unwrap(), 1);
    namespace.get::<ivm::Reference>("bump").unwrap().apply::<()>((), (), &Default::default()).unwrap();
    assert_eq!(namespace.get::<u32>("count").unwrap(), 2);
    // The async form is as live.
    let later = crate::block_on(counter.namespace_async()).unwrap();
    assert_eq!(crate::block_on(later.get_async::<u32>("count")).unwrap(), 2);
    // Linking again is a no-op that asks the resolver nothing.
    main.instantiate(&context, |_, _| panic!("the resolver must not be asked")).unwrap();
}

#[test]
fn cycles_link_and_top_level_await_is_awaited_within_the_timeout() {
    let (isolate, context) = new_context();
    let a = isolate.compile_module("import { b } from 'b'; export const a = 'a'; export const both = () => a + b;", &named("a")).unwrap();
    let b = isolate.compile_module("import { a } from 'a'; export const b = 'b'; export const late = await Promise.resolve(7);", &named("b")).unwrap();
    let modules = [("a", a.clone()), ("b", b.clone())];
    a.instantiate(&context, by_name(&modules)).unwrap();
    a.evaluate(&EvalOptions::default()).unwrap();
    assert_eq!(b.namespace().unwrap().get::<u32>("late").unwrap(), 7);
    assert_eq!(a.namespace().unwrap().get::<ivm::Reference>("both").unwrap().apply::<String>((), (), &Default::default()).unwrap(), "ab");
    // The timeout covers top-level await.
    let spin = isolate.compile_module("await null; for (;;) {}", &named("spin")).unwrap();
    spin.instantiate(&context, |_, _| unreachable!()).unwrap();
    let err = spin.evaluate(&EvalOptions::default().timeout(Duration::from_millis(50))).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
}

#[test]
fn a_failing_resolver_leaves_the_graph_linkable() {
    // isolated-vm: tests/module-resolve-throws.js (#559)
    let (isolate, context) = new_context();
    let dep = isolate.compile_module("export default 5", &named("dep")).unwrap();
    let main = isolate.compile_module("import five from 'dep'; export const six = five + 1;", &named("main")).unwrap();
    let err = main.instantiate(&context, |_, _| Err(Error::js("RangeError", "resolver failed"))).unwrap_err();
    assert_eq!((err.name(), err.message()), ("RangeError", "resolver failed"));
    // A module of another isolate is refused with a clear error.
    let (other, _) = new_context();
    let foreign = other.compile_module("export default 1", &named("foreign")).unwrap();
    let err = main.instantiate(&context, |_, _| Ok(foreign.clone())).unwrap_err();
    assert!(err.message().starts_with("Resolved dependency was not `Module`"), "{err}");
    // V8 refusing the graph (a missing export) also leaves it linkable.
    let wrong = isolate.compile_module("export const nothing = 0", &named("wrong")).unwrap();
    let err = main.instantiate(&context, |_, _| Ok(wrong.clone())).unwrap_err();
    assert_eq!(err.name(), "SyntaxError", "{err:?}");
    main.instantiate(&context, |_, _| Ok(dep.clone())).unwrap();
    main.evaluate(&Default::default()).unwrap();
    assert_eq!(main.namespace().unwrap().get::<u32>("six").unwrap(), 6);
}

#[test]
fn a_module_that_throws_throws_again_when_evaluated_again() {
    // isolated-vm: tests/module-throws.js
    let (isolate, context) = new_context();
    let module = isolate.compile_module("throw new TypeError('at load')", &named("bad.mjs")).unwrap();
    module.instantiate(&context, |_, _| unreachable!()).unwrap();
    for _ in 0..2 {
        let err = module.evaluate(&Default::default()).unwrap_err();
        assert_eq!((err.name(), err.message()), ("TypeError", "at load"));
    }
    // Before instantiation there is nothing to run or read.
    let fresh = isolate.compile_module("export const x = 1", &named("fresh")).unwrap();
    assert_eq!(fresh.evaluate(&Default::default()).unwrap_err().message(), "Module is uninstantiated");
    // Syntax errors carry isolated-vm's location suffix.
    let err = isolate.compile_module("export const = 1", &named("syntax.mjs")).unwrap_err();
    assert!(err.message().ends_with("[syntax.mjs:1:14]"), "{err}");
}

#[test]
fn import_meta_is_filled_by_the_hook() {
    // isolated-vm: tests/module-meta.js
    let (isolate, context) = new_context();
    let module = isolate.compile_module("export const meta = { ...import.meta }", &named("file:///app/main.mjs")).unwrap();
    module.instantiate(&context, |_, _| unreachable!()).unwrap();
    module.evaluate(&Default::default()).unwrap();
    let meta: serde_json::Value = module.namespace().unwrap().get("meta").unwrap();
    assert_eq!(meta, serde_json::json!({ "url": "file:///app/main.mjs" }), "the default: the filename as url");
    isolate.set_import_meta(|filename| ivm::to_value(&serde_json::json!({ "url": filename, "env": "test" })));
    let hooked = isolate.compile_module("export const env = import.meta.env", &named("x")).unwrap();
    hooked.instantiate(&context, |_, _| unreachable!()).unwrap();
    hooked.evaluate(&Default::default()).unwrap();
    assert_eq!(hooked.namespace().unwrap().get::<String>("env").unwrap(), "test");
}

#[test]
fn json_and_data_modules_are_made_by_the_host() {
    let (isolate, context) = new_context();
    let json = isolate.json_module("config.json", r#"{ "retries": 3, "hosts": ["a", "b"] }"#).unwrap();
    let data = isolate.data_module("limits", serde_json::json!({ "default": { "cpu": 2 }, "memory": 64 })).unwrap();
    let main = isolate
        .compile_module(
            "import config from './config.json' with { type: 'json' }; import limits, { memory } from 'limits';
             export const summary = `${config.retries} ${config.hosts.length} ${limits.cpu} ${memory}`;",
            &named("main"),
        )
        .unwrap();
    assert_eq!(main.requests()[0].attribute("type"), Some("json"));
    main.instantiate(&context, |request, _| Ok(if request.attribute("type") == Some("json") { json.clone() } else { data.clone() }))
        .unwrap();
    main.evaluate(&Default::default()).unwrap();
    assert_eq!(main.namespace().unwrap().get::<String>("summary").unwrap(), "3 2 2 64");
    let err = isolate.data_module("bad", 5).unwrap_err();
    assert_eq!(err.kind(), ivm::ErrorKind::InvalidArgument);

    // The async forms make the same modules, queued after the isolate's earlier operations.
    let json = crate::block_on(isolate.json_module_async("later.json", "[1, 2, 3]")).unwrap();
    let data = crate::block_on(isolate.data_module_async("later", serde_json::json!({ "total": 6 }))).unwrap();
    let later = isolate
        .compile_module("import list from 'later.json'; import { total } from 'later'; export const ok = list.length * 2 === total;", &named("later-main"))
        .unwrap();
    later.instantiate(&context, |request, _| Ok(if request.specifier == "later.json" { json.clone() } else { data.clone() })).unwrap();
    later.evaluate(&Default::default()).unwrap();
    assert!(later.namespace().unwrap().get::<bool>("ok").unwrap());
    let err = crate::block_on(isolate.data_module_async("bad", "not a map")).unwrap_err();
    assert_eq!(err.kind(), ivm::ErrorKind::InvalidArgument);
}

#[test]
fn dynamic_import_goes_to_the_hook_and_rejects_without_one() {
    let (isolate, context) = new_context();
    let options = EvalOptions::default().promise();
    let err = context.eval_with::<String>("import('x').then(() => 'loaded')", &options).unwrap_err();
    assert_eq!(err.name(), "TypeError");
    assert!(err.message().contains("dynamic import() is not enabled"), "{err}");
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    isolate.set_dynamic_import(move |isolate, request, referrer| {
        counter.fetch_add(1, Ordering::SeqCst);
        match request.specifier.as_str() {
            "lib" => isolate.compile_module(&format!("import {{ tag }} from 'tag'; export const from = '{referrer}' + tag;"), &named("lib")),
            "tag" => isolate.compile_module("export const tag = '!'; await null;", &named("tag")),
            other => Err(Error::js("Error", format!("no module {other}"))),
        }
    });
    let from: String = context
        .eval_with("import('lib').then(ns => ns.from)", &options.clone().filename("file:///page.js"))
        .unwrap();
    assert_eq!(from, "file:///page.js!");
    assert_eq!(asked.load(Ordering::SeqCst), 2, "the hook also resolves the imported module's imports");
    let err = context.eval_with::<String>("import('missing')", &options).unwrap_err();
    assert_eq!(err.message(), "no module missing");
}

/// A module root with a secret beside it, and a symlink in the root pointing at the secret.
fn module_root() -> (tempdir::Dir, std::path::PathBuf) {
    let base = tempdir::Dir::new();
    let root = base.path().join("root");
    std::fs::create_dir_all(root.join("lib")).unwrap();
    std::fs::write(base.path().join("secret.mjs"), "export default 'secret'").unwrap();
    std::fs::write(root.join("lib/util.mjs"), "export const util = 'util'; export { default as up } from '../up.mjs';").unwrap();
    std::fs::write(root.join("up.mjs"), "export default 'up'").unwrap();
    std::fs::write(root.join("data.json"), r#"{ "n": 1 }"#).unwrap();
    std::fs::write(
        root.join("main.mjs"),
        "import { util, up } from './lib/util.mjs'; import data from '/data.json' with { type: 'json' };
         import { util as again } from 'file:///lib/util.mjs'; import config from 'config';
         export const all = [util, up, data.n, again === util, config.debug, import.meta.url].join();",
    )
    .unwrap();
    std::os::unix::fs::symlink(base.path().join("secret.mjs"), root.join("link.mjs")).unwrap();
    (base, root)
}

#[test]
fn the_directory_loader_reads_inside_its_root_only() {
    let (_base, root) = module_root();
    let (isolate, context) = new_context();
    let loader = DirLoader::open(&root).unwrap();
    loader.builtin_data(&isolate, "config", serde_json::json!({ "default": { "debug": true } })).unwrap();
    let main = loader.load(&isolate, "main.mjs").unwrap();
    main.instantiate(&context, |request, referrer| loader.resolve(&isolate, request, referrer.filename())).unwrap();
    main.evaluate(&Default::default()).unwrap();
    assert_eq!(main.namespace().unwrap().get::<String>("all").unwrap(), "util,up,1,true,true,file:///main.mjs");
    // Escapes are refused with a clear error; nothing outside the root is read.
    for specifier in ["../secret.mjs", "./lib/../../secret.mjs", "/../secret.mjs", "file:///../secret.mjs", "./link.mjs"] {
        let request = ImportRequest { specifier: specifier.into(), attributes: vec![] };
        let err = loader.resolve(&isolate, &request, "file:///main.mjs").unwrap_err();
        assert!(err.message().contains("outside the module root"), "{specifier}: {err}");
    }
    // Host paths and percent-encoded dots are just names that do not exist in the root.
    for specifier in [&format!("{}", root.parent().unwrap().join("secret.mjs").display()), "./%2e%2e/secret.mjs", "%2e%2e/secret.mjs"] {
        let request = ImportRequest { specifier: specifier.to_string(), attributes: vec![] };
        let err = loader.resolve(&isolate, &request, "file:///main.mjs").unwrap_err();
        assert!(err.message().starts_with("Cannot find module"), "{specifier}: {err}");
    }
    // The same loader serves import().
    let dynamic = loader;
    isolate.set_dynamic_import(move |isolate, request, referrer| dynamic.resolve(isolate, request, referrer));
    let up: String = context.eval_with("import('/up.mjs').then(m => m.default)", &EvalOptions::default().promise()).unwrap();
    assert_eq!(up, "up");
    let err = context.eval_with::<String>("import('../secret.mjs')", &EvalOptions::default().promise()).unwrap_err();
    assert!(err.message().contains("outside the module root"), "{err}");
    isolate.dispose().unwrap();
}

#[test]
fn the_directory_loader_reads_regular_files_of_bounded_size_only() {
    let (_base, root) = module_root();
    let (isolate, _context) = new_context();
    // A FIFO would block the open (and the read) forever; a device could never end.
    let fifo = root.join("fifo.mjs");
    let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: plain libc call on a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let loader = DirLoader::open(&root).unwrap().max_file_size(1024);
    let err = loader.load(&isolate, "fifo.mjs").unwrap_err();
    assert!(err.message().contains("not a regular file"), "{err}");
    std::fs::write(root.join("big.mjs"), format!("export const s = '{}';", "x".repeat(2048))).unwrap();
    let err = loader.load(&isolate, "big.mjs").unwrap_err();
    assert!(err.message().contains("larger than 1024 bytes"), "{err}");
    assert!(loader.load(&isolate, "main.mjs").is_ok());
}

#[test]
fn async_instantiation_can_load_sources_lazily() {
    let (isolate, context) = new_context();
    let main = isolate.compile_module("import { n } from 'lazy'; export const doubled = n * 2;", &named("main")).unwrap();
    let loader_isolate = isolate.clone();
    let linked = main.instantiate_async(&context, move |request, _| {
        let isolate = loader_isolate.clone();
        async move {
            // Pretend the source arrives later.
            std::thread::sleep(Duration::from_millis(5));
            isolate.compile_module_async(format!("export const n = {};", request.specifier.len()), named("lazy")).await
        }
    });
    crate::block_on(linked).unwrap();
    crate::block_on(main.evaluate_async(EvalOptions::default())).unwrap();
    assert_eq!(main.namespace().unwrap().get::<u32>("doubled").unwrap(), 8);
}

/// A temporary directory, removed on drop.
mod tempdir {
    pub struct Dir(std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let path = std::env::temp_dir().join(format!("ivm-test-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&path).unwrap();
            Dir(path)
        }
        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}


