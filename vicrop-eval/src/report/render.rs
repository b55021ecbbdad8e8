//! The report as markdown and CSV text.

use std::fmt::Write as _;

use super::{MeanCi, MetricSet, Report, Run, SizeBin};
use crate::score::{Metric, Scores, Task};

/// A markdown table cell: pipes escaped, newlines flattened.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// A CSV field, quoted when it holds a comma, a quote or a line break.
fn csv(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn pct(scores: Option<&Scores>, metric: Metric) -> Option<f64> {
    scores.and_then(|s| s.get(metric))
}

fn fmt2(v: Option<f64>) -> String {
    v.map_or_else(String::new, |v| format!("{v:.2}"))
}

fn num(v: Option<f64>) -> String {
    v.map_or_else(String::new, |v| format!("{v}"))
}

fn metrics_line(report: &Report, tasks: &[Task]) -> String {
    let set = report.metric_set();
    let list: Vec<String> = tasks
        .iter()
        .map(|&t| format!("{t} `{}`", set.primary(t)))
        .collect();
    let whose = match set {
        MetricSet::Reference => "the ViCrop reference's scoring, as the paper",
        MetricSet::Official => "each benchmark's own metric",
    };
    format!("{} ({whose})", list.join(", "))
}

fn main_table(report: &Report, out: &mut String) {
    let tasks = report.tasks();
    let set = report.metric_set();
    let _ = writeln!(out, "## Accuracy without and with the crop\n");
    let _ = writeln!(
        out,
        "Accuracy in percent of the answer without the crop (`no crop`) and with it (`crop`), \
         per model x method and task. Metrics: {}. Failed items count as wrong.\n",
        metrics_line(report, &tasks)
    );
    let mut header = String::from("| model | method |");
    let mut rule = String::from("|---|---|");
    for t in &tasks {
        let _ = write!(header, " {t} no crop | {t} crop |");
        rule.push_str("---:|---:|");
    }
    let _ = writeln!(out, "{header}\n{rule}");
    for (model, label) in report.rows() {
        let mut line = format!("| {} | {} |", cell(model), cell(label));
        for &t in &tasks {
            match report.run(model, label, t) {
                Some(run) => {
                    let m = set.primary(t);
                    let crop = if run.has_crop() {
                        fmt2(pct(run.crop.as_ref(), m))
                    } else {
                        "–".to_string()
                    };
                    let _ = write!(line, " {} | {} |", fmt2(run.no_crop.get(m)), crop);
                }
                None => line.push_str("  |  |"),
            }
        }
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "### Runs\n");
    let _ = writeln!(
        out,
        "`failed`: items with an error or without an answer (counted wrong above); \
         `no box`: items left out of the size table.\n"
    );
    let _ = writeln!(
        out,
        "| model | method | task | items | failed | no box | folder |\n|---|---|---|---:|---:|---:|---|"
    );
    for r in report.runs() {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            cell(&r.model),
            cell(&r.label),
            r.task,
            r.n,
            r.failed,
            r.without_box,
            cell(&r.dir.display().to_string())
        );
    }
    let _ = writeln!(out);
}

fn size_tables(report: &Report, out: &mut String) {
    let tasks: Vec<Task> = report
        .tasks()
        .into_iter()
        .filter(|&t| report.has_sizes(t))
        .collect();
    if tasks.is_empty() {
        return;
    }
    let set = report.metric_set();
    let _ = writeln!(out, "## Accuracy by relative answer-box size\n");
    let _ = writeln!(
        out,
        "Relative size: the area of the bounding box of the item's answer boxes over the image \
         area; small < 0.005, medium < 0.05, large >= 0.05 (the paper's Table 1). Items \
         without a box or an image size are left out; failed items count as wrong. Accuracy \
         in percent; the last column gives the items per bin.\n"
    );
    for task in tasks {
        let m = set.primary(task);
        let _ = writeln!(out, "### {task} (`{m}`)\n");
        let mut header = String::from("| model | method |");
        let mut rule = String::from("|---|---|");
        for bin in SizeBin::ALL {
            let _ = write!(header, " {0} no crop | {0} crop |", bin.name());
            rule.push_str("---:|---:|");
        }
        let _ = writeln!(out, "{header} items (S/M/L) |\n{rule}---:|");
        for r in report.runs().iter().filter(|r| r.task == task) {
            if r.by_size.iter().all(|c| c.n == 0) {
                continue;
            }
            let mut line = format!("| {} | {} |", cell(&r.model), cell(&r.label));
            for c in &r.by_size {
                let crop = if !r.has_crop() {
                    "–".to_string()
                } else {
                    fmt2(pct(c.crop.as_ref(), m))
                };
                let _ = write!(line, " {} | {} |", fmt2(pct(c.no_crop.as_ref(), m)), crop);
            }
            let counts: Vec<String> = r.by_size.iter().map(|c| c.n.to_string()).collect();
            let _ = writeln!(out, "{line} {} |", counts.join("/"));
        }
        let _ = writeln!(out);
    }
}

fn ci_text(s: &MeanCi) -> String {
    match (s.low, s.high) {
        (Some(lo), Some(hi)) => format!("{:.2} [{lo:.2}, {hi:.2}]", s.mean),
        _ => format!("{:.2}", s.mean),
    }
}

/// The series name of a run in the attention table and plot.
pub(super) fn series_name(r: &Run) -> String {
    format!("{} {}", r.model, r.label)
}

fn attention_tables(report: &Report, out: &mut String) {
    let tasks: Vec<Task> = report
        .tasks()
        .into_iter()
        .filter(|&t| report.has_attention(t))
        .collect();
    if tasks.is_empty() {
        return;
    }
    let _ = writeln!(out, "## Attention ratio per layer\n");
    let _ = writeln!(
        out,
        "The attention mass inside the answer box over the average mass of all same-sized \
         windows of the map (1: no preference for the answer region), per LLM layer (the \
         position in the rows' `attention_ratio`), as the mean over the items with its 95% \
         confidence interval, mean ± 1.96·sd/√n (sd: the sample standard deviation, n: the \
         items). `attention_ratio.csv` also splits the items by whether the answer without the \
         crop was right.\n"
    );
    for task in tasks {
        let runs: Vec<&Run> = report
            .runs()
            .iter()
            .filter(|r| r.task == task && r.attention.is_some())
            .collect();
        let _ = writeln!(out, "### {task}\n");
        let mut header = String::from("| layer |");
        let mut rule = String::from("|---:|");
        let mut layers = 0;
        for r in &runs {
            if let Some(a) = &r.attention {
                let _ = write!(header, " {} (n={}) |", cell(&series_name(r)), a.n);
                rule.push_str("---|");
                layers = layers.max(a.all.len());
            }
        }
        let _ = writeln!(out, "{header}\n{rule}");
        for k in 0..layers {
            let mut line = format!("| {k} |");
            for r in &runs {
                let text = r
                    .attention
                    .as_ref()
                    .and_then(|a| a.all.get(k))
                    .map_or_else(String::new, ci_text);
                let _ = write!(line, " {text} |");
            }
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out);
    }
}

/// The whole markdown; `plots` (title, file name) are linked at the end when given.
pub(super) fn markdown(report: &Report, plots: Option<&[(String, String)]>) -> String {
    let mut out = String::from("# ViCrop evaluation report\n\n");
    main_table(report, &mut out);
    size_tables(report, &mut out);
    attention_tables(report, &mut out);
    if let Some(plots) = plots {
        if !plots.is_empty() {
            let _ = writeln!(out, "## Plots\n");
            for (title, file) in plots {
                let _ = writeln!(out, "![{title}]({file})\n");
            }
        }
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

pub(super) fn main_csv(report: &Report) -> String {
    let set = report.metric_set();
    let mut out = String::from("model,method,task,metric,primary,n,failed,no_crop,crop,folder\n");
    for r in report.runs() {
        for &(m, v) in &r.no_crop.metrics {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{}",
                csv(&r.model),
                csv(&r.label),
                r.task,
                m,
                set.primary(r.task) == m,
                r.n,
                r.failed,
                v,
                num(pct(r.crop.as_ref(), m)),
                csv(&r.dir.display().to_string())
            );
        }
    }
    out
}

pub(super) fn by_size_csv(report: &Report) -> String {
    let set = report.metric_set();
    let mut out = String::from("model,method,task,size,metric,primary,n,failed,no_crop,crop\n");
    for r in report.runs() {
        for c in &r.by_size {
            let Some(no_crop) = &c.no_crop else {
                continue;
            };
            for &(m, v) in &no_crop.metrics {
                let _ = writeln!(
                    out,
                    "{},{},{},{},{},{},{},{},{},{}",
                    csv(&r.model),
                    csv(&r.label),
                    r.task,
                    c.bin,
                    m,
                    set.primary(r.task) == m,
                    c.n,
                    c.failed,
                    v,
                    num(pct(c.crop.as_ref(), m))
                );
            }
        }
    }
    out
}

pub(super) fn attention_csv(report: &Report) -> String {
    let mut out = String::from("model,method,task,subset,layer,n,mean,sd,ci95_low,ci95_high\n");
    for r in report.runs() {
        let Some(a) = &r.attention else {
            continue;
        };
        let subsets = [
            ("all", Some(&a.all)),
            ("correct", a.correct.as_ref()),
            ("incorrect", a.incorrect.as_ref()),
        ];
        for (name, stats) in subsets {
            let Some(stats) = stats else {
                continue;
            };
            for (k, s) in stats.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{},{},{},{name},{k},{},{},{},{},{}",
                    csv(&r.model),
                    csv(&r.label),
                    r.task,
                    s.n,
                    s.mean,
                    num(s.sd),
                    num(s.low),
                    num(s.high)
                );
            }
        }
    }
    out
}
