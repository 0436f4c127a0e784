// The parts of the shipped Grafana dashboard the tests read: panels, their queries, variables.

export interface DashboardPanel {
  type: string;
  title: string;
  description?: string;
  gridPos: { x: number; y: number; w: number; h: number };
  fieldConfig?: { defaults: { unit?: string } };
  datasource?: { uid: string };
  targets?: { expr: string; datasource?: { uid: string } }[];
}

export interface Dashboard {
  templating: { list: { name: string; type: string; query: string | { query: string } }[] };
  panels: DashboardPanel[];
}

/** Every query of every panel, with the panel's title and the data source it asks. */
export function dashboardQueries(
  dashboard: Dashboard,
): { panel: string; expr: string; datasource: string | undefined }[] {
  return dashboard.panels.flatMap((panel) =>
    (panel.targets ?? []).map((target) => ({
      panel: panel.title,
      expr: target.expr,
      datasource: (target.datasource ?? panel.datasource)?.uid,
    })),
  );
}
