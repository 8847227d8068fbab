/**
 * nbflow-dashboard: a launcher card and a command palette entry that open the nbflow
 * dashboard, which nbflow's Jupyter server extension serves at `<base_url>nbflow/`.
 *
 * The dashboard is a page of its own (it has its own navigation and forms), so the
 * command opens it in a new browser tab. The tab is already logged in: it shares the
 * Jupyter session's cookie, and the dashboard sits behind Jupyter's own login.
 */
import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { PageConfig, URLExt } from '@jupyterlab/coreutils';
import { ILauncher } from '@jupyterlab/launcher';
import { LabIcon } from '@jupyterlab/ui-components';

import iconSvg from '../style/nbflow-dashboard.svg';

const COMMAND = 'nbflow:open-dashboard';
const LABEL = 'nbflow dashboard';

export const dashboardIcon = new LabIcon({
  name: 'nbflow-dashboard:icon',
  svgstr: iconSvg
});

/** The dashboard's address under this server's base URL (`/` or `/user/NAME/` ...). */
export function dashboardUrl(): string {
  return URLExt.join(PageConfig.getBaseUrl(), 'nbflow/');
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'nbflow-dashboard:plugin',
  description: 'Open the nbflow dashboard from the launcher and the command palette.',
  autoStart: true,
  optional: [ILauncher, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    launcher: ILauncher | null,
    palette: ICommandPalette | null
  ) => {
    app.commands.addCommand(COMMAND, {
      label: LABEL,
      caption: 'Open the nbflow dashboard (jobs, runs, pipelines) in a new browser tab',
      icon: dashboardIcon,
      execute: () => {
        window.open(dashboardUrl(), '_blank', 'noopener');
      }
    });
    if (launcher) {
      // No rank: the card goes after JupyterLab's own, so the section keeps the icon of
      // its first card (Terminal) as its heading.
      launcher.add({ command: COMMAND, category: 'Other' });
    }
    if (palette) {
      palette.addItem({ command: COMMAND, category: 'nbflow' });
    }
  }
};

export default plugin;
