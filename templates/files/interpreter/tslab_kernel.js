// sbxd: tslab's Jupyter kernel (npm's tslab, in /opt/sbxd/tslab), started
// as tslab's own `kernel` command starts it, with what it sends made what
// Jupyter clients expect of a kernel (tslab itself prints a cell's value
// with console.log and its errors on stderr):
//   - the value of a cell's last expression is an execute_result
//     (text/plain, util.inspect's form), not a line of stdout;
//   - an exception, or a compile error (TypeScript's diagnostics), is an
//     error message (ename, evalue, traceback), not stderr;
//   - each cell starts with execute_input (its execution count).
//
// usage: node tslab_kernel.js CONNECTION_FILE [--js]
'use strict'

const util = require('util')

const DIST = '/opt/sbxd/tslab/node_modules/tslab/dist/'
const executor = require(DIST + 'executor.js')
const jupyter = require(DIST + 'jupyter.js')
const main = require(DIST + 'main.js')

let cell = null // the execution being run: { send, count, error, diagnostics }

// The executor reports through the console object it is given (user code
// writes to the real one).
const createExecutor = executor.createExecutor
executor.createExecutor = (rootDir, convs) =>
  createExecutor(rootDir, convs, {
    log: (value) => {
      if (cell === null) return console.log(value)
      cell.send('execute_result', {
        execution_count: cell.count,
        data: { 'text/plain': util.inspect(value) },
        metadata: {},
      })
    },
    error: (first, ...rest) => {
      if (cell === null) return console.error(first, ...rest)
      if (rest.length === 0) {
        // a value the cell threw
        const e = first
        const isErr = e !== null && typeof e === 'object' && 'stack' in e
        cell.error = {
          ename: isErr ? String(e.name || 'Error') : 'Error',
          evalue: isErr ? String(e.message) : util.inspect(e),
          traceback: isErr ? String(e.stack).split('\n') : [util.inspect(e)],
        }
      } else {
        // a diagnostic: "%s%d:%d - %s" (file, line, column, message)
        cell.diagnostics.push(util.format(first, ...rest))
      }
    },
  })

jupyter.ZmqServer.prototype.handleExecute = async function (sock, msg) {
  const send = (type, content) => {
    const m = msg.createReply()
    m.header.msg_type = type
    m.content = content
    m.signAndSend(this.connInfo.key, this.iopub)
  }
  const my = { send, count: this.handler.execCount + 1, error: null, diagnostics: [] }
  cell = my
  send('execute_input', { code: msg.content.code, execution_count: my.count })
  let content
  try {
    content = await this.handler.handleExecute(
      msg.content,
      (name, text) => send('stream', { name, text }),
      (data, update) => send(update ? 'update_display_data' : 'display_data', data),
    )
  } finally {
    cell = null
  }
  if (content.status === 'error') {
    const e = my.error || {
      ename: 'CompileError',
      evalue: my.diagnostics.join('\n'),
      traceback: my.diagnostics,
    }
    send('error', e)
    Object.assign(content, e)
  }
  const reply = msg.createReply()
  reply.header.msg_type = 'execute_reply'
  reply.content = content
  reply.signAndSend(this.connInfo.key, sock)
}

const args = process.argv.slice(2)
main.startKernel({
  configPath: args.find((a) => !a.startsWith('--')),
  enableFindLocal: false,
  jsKernel: args.includes('--js'),
})
