// compose-check loads a Compose file the way `docker compose` does — compose-go's loader,
// with interpolation from an env file, env_file resolution, normalisation and the consistency
// checks on — and prints the resolved project as JSON, or the loader's error and exit code 1.
//
//	compose-check -env-file deploy/.env deploy/compose.yaml
//
// compose-go's own cmd (`go install github.com/compose-spec/compose-go/v2/cmd`) loads only the
// model, where neither the environment nor the consistency checks apply; this loads the project.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	envFile := flag.String("env-file", "", "the env file to interpolate from (like docker compose --env-file)")
	flag.Parse()
	if flag.NArg() != 1 {
		fail("usage: compose-check [-env-file FILE] COMPOSE_FILE", nil)
	}
	file, err := filepath.Abs(flag.Arg(0))
	if err != nil {
		fail("bad path", err)
	}
	opts := []cli.ProjectOptionsFn{
		cli.WithWorkingDirectory(filepath.Dir(file)),
		cli.WithInterpolation(true),
		cli.WithResolvedPaths(true),
		cli.WithNormalization(true),
		cli.WithConsistency(true),
	}
	if *envFile != "" {
		opts = append(opts, cli.WithEnvFiles(*envFile), cli.WithDotEnv)
	}
	options, err := cli.NewProjectOptions([]string{file}, opts...)
	if err != nil {
		fail("bad options", err)
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		fail("invalid project", err)
	}
	out, err := json.MarshalIndent(project, "", "  ")
	if err != nil {
		fail("cannot print the project", err)
	}
	fmt.Println(string(out))
}

func fail(message string, err error) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", message, err)
	} else {
		fmt.Fprintln(os.Stderr, message)
	}
	os.Exit(1)
}
