//! The checked-in header `include/update_lock.h` must be exactly what the pinned cbindgen
//! generates from the sources. Regenerate it with
//! `UPDATE_HEADER=1 cargo test -p update-lock-c --test header`.

use std::path::Path;

#[test]
fn header_matches_the_sources() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("read bindings-c/cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen could not generate the header");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let generated = String::from_utf8(generated).expect("header is UTF-8");

    let header = crate_dir.join("include").join("update_lock.h");
    if std::env::var_os("UPDATE_HEADER").is_some_and(|v| v == "1") {
        std::fs::write(&header, &generated).expect("write include/update_lock.h");
        eprintln!("wrote {}", header.display());
        return;
    }
    let checked_in = std::fs::read_to_string(&header).unwrap_or_default();
    if checked_in != generated {
        let diff = first_difference(&checked_in, &generated);
        panic!(
            "bindings-c/include/update_lock.h is out of date with the Rust sources.\n{diff}\n\
             Regenerate it with: UPDATE_HEADER=1 cargo test -p update-lock-c --test header\n\
             (then review and commit the header together with the source change)"
        );
    }
}

/// The first differing lines, with a little context, as a readable diff excerpt.
fn first_difference(old: &str, new: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let i = a
        .iter()
        .zip(&b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let mut out = format!(
        "first difference at line {} (checked in: {} lines, generated: {} lines):\n",
        i + 1,
        a.len(),
        b.len()
    );
    for (k, l) in a.iter().enumerate().skip(i).take(6) {
        out.push_str(&format!("- {:>5} | {l}\n", k + 1));
    }
    for (k, l) in b.iter().enumerate().skip(i).take(6) {
        out.push_str(&format!("+ {:>5} | {l}\n", k + 1));
    }
    out
}
