use std::path::Path;

use super::*;
use crate::workflow_file;

#[test]
fn the_demo_workflow_is_the_documented_file() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/workflows/wordcount.toml");
    let from_file = workflow_file::load(&file).unwrap();
    assert_eq!(from_file, demo_workflow(&DEMO_CORPUS.join(" ")));
}

#[test]
fn words_are_runs_of_letters_and_digits_lowercased() {
    let mut c = Counts::new();
    count_words_into("Raft, raft; RAFT-log x2 größe\n`apply()`", &mut c);
    let want: Counts =
        [("raft", 3), ("log", 1), ("x2", 1), ("größe", 1), ("apply", 1)].map(|(w, n)| (w.to_string(), n)).into();
    assert_eq!(c, want);
}

#[test]
fn a_summary_keeps_the_most_frequent_words_ties_by_word() {
    let counts: Counts = [("b", 2), ("a", 2), ("c", 5), ("d", 1)].map(|(w, n)| (w.to_string(), n)).into();
    let s = Summary::of(&counts, 4, 3);
    assert_eq!((s.total, s.distinct, s.files), (10, 4, 4));
    assert_eq!(s.top, vec![("c".to_string(), 5), ("a".to_string(), 2), ("b".to_string(), 2)]);
    assert_eq!(s.report(2), "10 words (4 distinct) in 4 files; top 2: c 5, a 2");
    assert_eq!(Summary::of(&Counts::new(), 0, 3).report(3), "0 words (0 distinct) in 0 files; top 0: ");
    // The reduce's result is this JSON; the report steps read it back.
    let json = serde_json::to_vec(&s).unwrap();
    assert_eq!(serde_json::from_slice::<Summary>(&json).unwrap(), s);
}

#[test]
fn generators_list_files_and_directories_sorted_and_refuse_missing_paths() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("sub")).unwrap();
    std::fs::create_dir(d.join("sub/nested")).unwrap();
    for f in ["sub/b.md", "sub/a.md", "top.txt", "sub/nested/deep.md"] {
        std::fs::write(d.join(f), "x").unwrap();
    }
    let paths =
        format!("{} {}  {}", d.join("top.txt").display(), d.join("sub").display(), d.join("sub/a.md").display());
    let files = list_files(&paths).unwrap();
    assert_eq!(files, vec![d.join("sub/a.md"), d.join("sub/b.md"), d.join("top.txt")], "nested dirs are not entered");
    let e = list_files(&d.join("nope").display().to_string()).unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
}

#[test]
fn the_reference_takes_the_full_report_over_the_threshold() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "to be or not to be").unwrap();
    let small = reference_result(&dir.path().display().to_string()).unwrap();
    assert_eq!(small, "6 words (4 distinct) in 1 files; top 3: be 2, to 2, not 1");
    let big = "word ".repeat(DEMO_FULL_OVER as usize + 1);
    std::fs::write(dir.path().join("b.txt"), big).unwrap();
    let full = reference_result(&dir.path().display().to_string()).unwrap();
    assert!(full.starts_with(&format!("{} words (5 distinct) in 2 files; top 5: word", DEMO_FULL_OVER + 7)), "{full}");
}
