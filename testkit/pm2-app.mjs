// PM2 refuses .ts scripts on this Node: this plain launcher registers tsx, then loads the app.
import { register } from 'tsx/esm/api'

register()
await import('./pm2-app.ts')
