"""sbxd bash kernel: a Jupyter kernel for bash on ipykernel's Kernel base
class.

Neither Debian nor npm packages a bash kernel (PyPI's bash_kernel is not
available here), so this small one is part of the template.  One bash
process per kernel keeps the state (variables, functions, the working
directory) between cells.  It reads its commands from a pipe of its own
(a pipe), so a command that reads stdin gets /dev/null rather than the
kernel's next commands.  A cell is written to a file and sourced (a syntax
error stays inside the cell), then bash prints a marker with the cell's
exit status on stdout and on stderr; output is forwarded as it arrives
until both markers are seen.  A nonzero status is reported as an error
(name "", value the status), as PyPI's bash_kernel does.  An interrupt
(SIGINT to the kernel's process group) ends the running command; bash
itself survives it (its trap returns from the sourced cell).  If bash exits
(`exit` in a cell), a fresh one is started for the next cell.
"""

import os
import select
import signal
import subprocess
import tempfile
import uuid

from ipykernel.kernelapp import IPKernelApp
from ipykernel.kernelbase import Kernel

LOOP = (
    "trap 'return 130 2>/dev/null' INT\n"
    "while IFS= read -r -u %d __sbxd_cmd; do eval \"$__sbxd_cmd\"; done\n"
)


class BashKernel(Kernel):
    implementation = "sbxd-bash"
    implementation_version = "1.0"
    language = "bash"
    language_version = "5"
    language_info = {"name": "bash", "mimetype": "text/x-sh", "file_extension": ".sh", "codemirror_mode": "shell"}
    banner = "bash (sbxd)"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.bash = None
        self.cmd_w = None
        self.cells = tempfile.mkdtemp(prefix="sbxd-bash-")

    def start_bash(self):
        r, w = os.pipe()
        self.bash = subprocess.Popen(
            ["bash", "--noprofile", "--norc", "-c", LOOP % r],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(r,))
        os.close(r)
        self.cmd_w = w

    def stream(self, name, data):
        if data:
            self.send_response(self.iopub_socket, "stream", {"name": name, "text": data})

    def do_execute(self, code, silent, store_history=True, user_expressions=None, allow_stdin=False,
                   **kwargs):
        if self.bash is None or self.bash.poll() is not None:
            self.start_bash()
        token = uuid.uuid4().hex
        path = os.path.join(self.cells, token + ".sh")
        with open(path, "w") as f:
            f.write(code)
            if not code.endswith("\n"):
                f.write("\n")
        line = ("source %s; printf '\\n\\036%s:%%d\\n' $?; printf '\\n\\036%s\\n' >&2\n" % (path, token, token))
        os.write(self.cmd_w, line.encode())
        status, interrupted = self.collect(token, silent)
        try:
            os.unlink(path)
        except OSError:
            pass
        if interrupted:
            content = {"ename": "KeyboardInterrupt", "evalue": "", "traceback": ["KeyboardInterrupt"]}
        elif status is None:
            content = {"ename": "", "evalue": "bash exited", "traceback": []}
        elif status != 0:
            content = {"ename": "", "evalue": str(status), "traceback": []}
        else:
            return {"status": "ok", "execution_count": self.execution_count, "payload": [],
                    "user_expressions": {}}
        if not silent:
            self.send_response(self.iopub_socket, "error", content)
        content.update({"status": "error", "execution_count": self.execution_count})
        return content

    def collect(self, token, silent):
        """Forward output until both markers; (status or None if bash
        died, interrupted)."""
        out_mark = ("\n\036%s:" % token).encode()
        err_mark = ("\n\036%s\n" % token).encode()
        bufs = {self.bash.stdout.fileno(): b"", self.bash.stderr.fileno(): b""}
        names = {self.bash.stdout.fileno(): "stdout", self.bash.stderr.fileno(): "stderr"}
        done = {}
        status = None
        interrupted = False
        while len(done) < 2:
            try:
                ready, _, _ = select.select([fd for fd in bufs if fd not in done], [], [], 1.0)
            except KeyboardInterrupt:
                interrupted = True
                continue
            for fd in ready:
                data = os.read(fd, 65536)
                if not data:
                    done[fd] = True
                    if self.bash.poll() is not None:
                        done.update({k: True for k in bufs})
                    continue
                buf = bufs[fd] + data
                mark = out_mark if names[fd] == "stdout" else err_mark
                i = buf.find(mark)
                if i >= 0:
                    rest = buf[i + len(mark):]
                    if names[fd] == "stdout":
                        nl = rest.find(b"\n")
                        if nl < 0:
                            bufs[fd] = buf  # the status is still coming
                            continue
                        try:
                            status = int(rest[:nl])
                        except ValueError:
                            status = 1
                    if not silent:
                        self.stream(names[fd], buf[:i].decode("utf-8", "replace"))
                    bufs[fd] = b""
                    done[fd] = True
                    continue
                # keep back what may be the start of a marker
                keep = len(mark) + 24
                cut = len(buf) - keep if len(buf) > keep else 0
                nl = buf.rfind(b"\n", 0, cut)
                if nl >= 0:
                    cut = nl  # whole lines where possible; the newline may start the marker
                if cut > 0:
                    if not silent:
                        self.stream(names[fd], buf[:cut].decode("utf-8", "replace"))
                    buf = buf[cut:]
                bufs[fd] = buf
        if self.bash.poll() is not None:
            for fd, buf in bufs.items():
                if buf and not silent:
                    self.stream(names[fd], buf.decode("utf-8", "replace"))
            self.bash = None
            os.close(self.cmd_w)
            return None, interrupted
        return status, interrupted or status == 130

    def do_shutdown(self, restart):
        if self.bash is not None and self.bash.poll() is None:
            self.bash.kill()
        return {"status": "ok", "restart": restart}


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    IPKernelApp.launch_instance(kernel_class=BashKernel)
