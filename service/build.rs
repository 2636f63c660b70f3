//! Embeds the FHIR data in fhir-profiles/: every SearchParameter in
//! search-parameters/, and our CodeSystems, ValueSets, ConceptMaps and
//! StructureDefinitions. Adding one is adding a file, and the binary
//! carries what it was built with.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    // embed_migrations! reads these at compile time; cargo must know.
    println!("cargo:rerun-if-changed=migrations");
    let profiles = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fhir-profiles");
    embed(
        &[profiles.join("search-parameters")],
        "search_parameters.rs",
        "(file name, contents) of every embedded SearchParameter.",
        false,
    );
    let folders = [
        "CodeSystem",
        "ValueSet",
        "ConceptMap",
        "StructureDefinition",
    ];
    embed(
        &folders.map(|f| profiles.join(f)),
        "conformance.rs",
        "(folder/file name, contents) of every embedded conformance resource.",
        true,
    );
}

/// Writes `OUT_DIR/<out>` with `FILES`: the `.json` files of `dirs`, sorted,
/// named `folder/file` when `with_folder`.
fn embed(dirs: &[PathBuf], out: &str, doc: &str, with_folder: bool) {
    let mut text = format!("/// {doc}\npub const FILES: &[(&str, &str)] = &[\n");
    for dir in dirs {
        println!("cargo:rerun-if-changed={}", dir.display());
        let folder = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        for f in &files {
            println!("cargo:rerun-if-changed={}", f.display());
            let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let name = if with_folder {
                format!("{folder}/{name}")
            } else {
                name.to_string()
            };
            let _ = writeln!(
                text,
                "    ({name:?}, include_str!({:?})),",
                f.display().to_string()
            );
        }
    }
    text.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join(out);
    std::fs::write(&dest, text).unwrap_or_else(|e| panic!("{}: {e}", dest.display()));
}
