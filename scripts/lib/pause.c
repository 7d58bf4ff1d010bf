/* The pod sandbox's process for the CRI tests (scripts/cri-setup builds it into the pause image,
 * FROM scratch): it holds the sandbox's namespaces open and does nothing else, as the kubelet's
 * pause container does. PID 1 of the sandbox: the kernel delivers it no signal it has no handler
 * for, so SIGINT and SIGTERM get one (exit at once), and it reaps the zombies that processes
 * sharing its PID namespace leave behind. Linked statically: the image has no libc. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig)
{
    (void)sig;
    _exit(0);
}

static void reap(int sig)
{
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
}

int main(void)
{
    struct sigaction sa = {0};

    sa.sa_handler = stop;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = reap;
    sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    sigaction(SIGCHLD, &sa, NULL);
    for (;;)
        pause();
}
