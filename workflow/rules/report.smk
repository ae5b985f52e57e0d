REPORT_TABLES = ["main", "datasets", "tune", "pooled", "pooled_tests", "cold_start", "ablation", "transfer", "efficiency"]
REPORT_FIGURES = ["training_curves", "metric_comparison", "cold_start", "noise", "sensitivity", "interests"]
EXPERIMENT_RESULTS = config["experiments"]["enabled"]  # the others' tables and figures say they were not run
DVC_PLOTS = ["training_curves", "metric_comparison", "noise", "sensitivity"]  # data of dvc.yaml's plots:


def experiments_folder(wildcards, input):
    """results/experiments as the report's inputs name it; with no experiment enabled and nothing tuned the
    report reads no file there, so the default path stands."""
    if input.experiments:
        return str(Path(input.experiments[0]).parents[1])
    if input.tuning:
        return str(Path(input.tuning[0]).parents[2])
    return "results/experiments"


rule report:
    input:
        params=job_params("report"),
        metrics=expand("results/metrics/{dataset}/{run}.json", dataset=config["datasets"], run=config["runs"]),
        per_user=expand("results/metrics/{dataset}/{run}.per_user.parquet", dataset=config["datasets"], run=config["runs"]),
        experiments=expand("results/experiments/{dataset}/{name}.json", dataset=config["datasets"], name=EXPERIMENT_RESULTS),
        tuning=[f"results/experiments/{dataset}/tune/{run}.json" for dataset in config["datasets"] for run in config["runs"] if is_tuned(config, dataset, run)],
        models=expand("models/{dataset}/{run}", dataset=config["datasets"], run=config["runs"]),
        data=expand("data/{dataset}", dataset=config["datasets"]),
        features=expand("features/{dataset}/{modality}", dataset=config["datasets"], modality=["image", "text"]),
    output:
        tables=[
            report(f"results/tables/{table}.csv", caption=f"../report/table_{table}.rst", category="Tables")
            for table in REPORT_TABLES
        ],
        formatted=expand("results/tables/{table}.{ext}", table=REPORT_TABLES, ext=["md", "tex"]),
        figures=expand("results/figures/{figure}.pdf", figure=REPORT_FIGURES),
        pngs=[
            report(f"results/figures/{figure}.png", caption=f"../report/{figure}.rst", category="Figures")
            for figure in REPORT_FIGURES
        ],
        summary="results/report.md",
        run_metrics=directory("results/summary"),  # dvc.yaml's metrics: one flat JSON per dataset and run
        plot_data=expand("results/plots/{plot}.csv", plot=DVC_PLOTS),
    log:
        log_file("report"),
    benchmark:
        benchmark_file("report")
    params:
        code=CODE_DIGESTS["report"],
        metrics=parent("metrics", 2),
        experiments=experiments_folder,
        models=parent("models", 2),
        data=parent("data"),
        features=parent("features", 2),
        out=parent("summary"),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=0,
    shell:
        "python -m bivrec report --params {input.params} --metrics {params.metrics} --experiments {params.experiments}"
        " --models {params.models} --data {params.data} --features {params.features} --out {params.out} > {log} 2>&1"
